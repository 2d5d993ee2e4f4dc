use soma_core::Tensor;
use soma_grpc_proto::tensorflow::serving::{ExampleList, ExampleListWithContext, Input, input};
use soma_grpc_proto::tensorflow::{Example, Feature, Features, FloatList, feature};
use tonic::Code;

use super::*;

fn example(name: &str, value: f32) -> Example {
    Example {
        features: Some(Features {
            feature: [(
                name.to_string(),
                Feature {
                    kind: Some(feature::Kind::FloatList(FloatList { value: vec![value] })),
                },
            )]
            .into(),
        }),
    }
}

#[test]
fn examples_are_serialized_with_the_context_merged_in() {
    let plain = Input {
        kind: Some(input::Kind::ExampleList(ExampleList {
            examples: vec![example("x", 1.0), example("x", 2.0)],
        })),
    };
    let serialized = serialize_input(Some(&plain)).unwrap();
    assert_eq!(serialized.len(), 2);
    assert_eq!(
        Example::decode(&serialized[1][..]).unwrap(),
        example("x", 2.0)
    );

    let with_context = Input {
        kind: Some(input::Kind::ExampleListWithContext(
            ExampleListWithContext {
                examples: vec![example("x", 3.0)],
                context: Some(example("c", 9.0)),
            },
        )),
    };
    let serialized = serialize_input(Some(&with_context)).unwrap();
    let merged = Example::decode(&serialized[0][..]).unwrap();
    let features = merged.features.unwrap().feature;
    assert_eq!(features.len(), 2, "context and example features are merged");
    assert!(features.contains_key("c") && features.contains_key("x"));
}

#[test]
fn empty_input_is_invalid() {
    for input in [
        None,
        Some(Input { kind: None }),
        Some(Input {
            kind: Some(input::Kind::ExampleList(ExampleList { examples: vec![] })),
        }),
    ] {
        let err = serialize_input(input.as_ref()).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "Input is empty.");
    }
}

#[test]
fn classification_results_pair_labels_and_scores() {
    let classes = Tensor::from_strings(
        vec![2, 2],
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()],
    )
    .unwrap();
    let scores = Tensor::from_slice(vec![2, 2], &[0.1f32, 0.9, 0.7, 0.3]).unwrap();
    let result = classification_result(2, Some(classes.clone()), Some(scores.clone())).unwrap();
    let second = &result.classifications[1].classes;
    assert_eq!((second[0].label.as_str(), second[0].score), ("c", 0.7));
    assert_eq!((second[1].label.as_str(), second[1].score), ("d", 0.3));

    let only_scores = classification_result(2, None, Some(scores.clone())).unwrap();
    assert_eq!(only_scores.classifications[0].classes[1].label, "");
    assert_eq!(only_scores.classifications[0].classes[1].score, 0.9);

    let err = classification_result(3, None, Some(scores)).unwrap_err();
    assert_eq!(
        err.message(),
        "Expected scores output batch size of 3. Got: 2"
    );
    let wrong = Tensor::from_slice(vec![2, 2], &[1i64, 2, 3, 4]).unwrap();
    let err = classification_result(2, Some(wrong), None).unwrap_err();
    assert_eq!(
        err.message(),
        "Expected classes Tensor of DT_STRING. Got: DT_INT64"
    );
    let three = Tensor::from_slice(vec![2, 3], &[0f32; 6]).unwrap();
    let err = classification_result(2, Some(classes), Some(three)).unwrap_err();
    assert!(err.message().contains("dim_size(1)"), "{}", err.message());
}

#[test]
fn regression_results_take_batch_or_batch_by_one() {
    for shape in [vec![3], vec![3, 1]] {
        let values = Tensor::from_slice(shape, &[1.0f32, 2.0, 3.0]).unwrap();
        let result = regression_result(3, &values).unwrap();
        let got: Vec<f32> = result.regressions.iter().map(|r| r.value).collect();
        assert_eq!(got, vec![1.0, 2.0, 3.0]);
    }
    let values = Tensor::from_slice(vec![1, 3], &[1.0f32, 2.0, 3.0]).unwrap();
    assert_eq!(
        regression_result(3, &values).unwrap_err().code(),
        Code::InvalidArgument
    );
    let values = Tensor::from_slice(vec![3], &[1.0f64, 2.0, 3.0]).unwrap();
    assert!(
        regression_result(3, &values)
            .unwrap_err()
            .message()
            .contains("DT_FLOAT")
    );
}
