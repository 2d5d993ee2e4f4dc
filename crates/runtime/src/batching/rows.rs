//! Row operations on tensors for batching: the first dimension is the batch dimension.

use soma_core::{Tensor, TensorData};

/// The batch size of one request: the first dimension shared by all its inputs. `None` if
/// an input is a scalar or the inputs disagree, which makes the request unbatchable.
pub(crate) fn request_rows(inputs: &[Tensor]) -> Option<usize> {
    let first = *inputs.first()?.shape().first()?;
    inputs
        .iter()
        .all(|t| t.shape().first() == Some(&first))
        .then_some(first)
}

/// What must agree for two requests to share a batch: every input's dims but the first.
pub(crate) fn row_shapes(inputs: &[Tensor]) -> Vec<Vec<usize>> {
    inputs.iter().map(|t| t.shape()[1..].to_vec()).collect()
}

/// Concatenates tensors of one dtype and equal row shape along the first dimension.
pub(crate) fn concat(parts: &[&Tensor]) -> Tensor {
    let first = parts[0];
    let rows: usize = parts.iter().map(|t| t.shape()[0]).sum();
    let mut shape = first.shape().to_vec();
    shape[0] = rows;
    let data = match first.data() {
        TensorData::Fixed(_) => {
            let len = parts.iter().map(|t| t.bytes().map_or(0, <[u8]>::len)).sum();
            let mut bytes = Vec::with_capacity(len);
            for part in parts {
                bytes.extend_from_slice(part.bytes().unwrap_or_default());
            }
            TensorData::Fixed(bytes)
        }
        TensorData::Strings(_) => {
            let mut items = Vec::with_capacity(parts.iter().map(|t| t.num_elements()).sum());
            for part in parts {
                items.extend_from_slice(part.strings().unwrap_or_default());
            }
            TensorData::Strings(items)
        }
    };
    Tensor::new(first.dtype(), shape, data).expect("parts agree on dtype and row shape")
}

/// Splits `tensor` along the first dimension into pieces of `rows[i]` rows, in order.
/// Rows beyond the sum of `rows` (padding) are dropped. `None` if the tensor has fewer
/// rows than that sum or is a scalar.
pub(crate) fn split(tensor: &Tensor, rows: &[usize]) -> Option<Vec<Tensor>> {
    let total = *tensor.shape().first()?;
    let wanted: usize = rows.iter().sum();
    if total < wanted {
        return None;
    }
    let per_row: usize = tensor.shape()[1..].iter().product();
    let mut pieces = Vec::with_capacity(rows.len());
    let mut start = 0;
    for &n in rows {
        let mut shape = tensor.shape().to_vec();
        shape[0] = n;
        let data = match tensor.data() {
            TensorData::Fixed(bytes) => {
                let width = tensor.dtype().byte_size()? * per_row;
                TensorData::Fixed(bytes[start * width..(start + n) * width].to_vec())
            }
            TensorData::Strings(items) => {
                TensorData::Strings(items[start * per_row..(start + n) * per_row].to_vec())
            }
        };
        pieces.push(Tensor::new(tensor.dtype(), shape, data).ok()?);
        start += n;
    }
    Some(pieces)
}

/// `tensor` with `extra` more rows, each a copy of its first row (TF Serving pads batches up
/// to an allowed size the same way; the padded rows' outputs are dropped).
pub(crate) fn pad_rows(tensor: &Tensor, extra: usize) -> Tensor {
    if extra == 0 {
        return tensor.clone();
    }
    let first_row = split(tensor, &[1]).expect("a request has at least one row");
    let mut parts = vec![tensor];
    parts.extend(std::iter::repeat_n(&first_row[0], extra));
    concat(&parts)
}

/// `tensor` grown to `row_shape` in every dimension but the first, new cells filled with its
/// first element (TF Serving's `pad_variable_length_inputs`). `None` if a dim would shrink.
pub(crate) fn pad_to(tensor: &Tensor, row_shape: &[usize]) -> Option<Tensor> {
    let shape = tensor.shape();
    if shape.len() != row_shape.len() + 1 || shape[1..].iter().zip(row_shape).any(|(a, b)| a > b) {
        return None;
    }
    if shape[1..] == *row_shape {
        return Some(tensor.clone());
    }
    let mut target = vec![shape[0]];
    target.extend_from_slice(row_shape);
    let count: usize = target.iter().product();
    // For each target cell, the source cell at the same coordinates if inside, else cell 0.
    let source_index = |mut flat: usize| -> usize {
        let mut index = 0;
        let mut stride = 1;
        let mut inside = true;
        for axis in (0..target.len()).rev() {
            let coord = flat % target[axis];
            flat /= target[axis];
            if coord >= shape[axis] {
                inside = false;
            }
            index += coord * stride;
            stride *= shape[axis];
        }
        if inside { index } else { 0 }
    };
    let data = match tensor.data() {
        TensorData::Fixed(bytes) => {
            let width = tensor.dtype().byte_size()?;
            let mut out = Vec::with_capacity(count * width);
            for cell in 0..count {
                let from = source_index(cell) * width;
                out.extend_from_slice(bytes.get(from..from + width)?);
            }
            TensorData::Fixed(out)
        }
        TensorData::Strings(items) => TensorData::Strings(
            (0..count)
                .map(|cell| items.get(source_index(cell)).cloned())
                .collect::<Option<_>>()?,
        ),
    };
    Tensor::new(tensor.dtype(), target, data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor::from_slice(shape, values).unwrap()
    }

    #[test]
    fn rows_need_a_shared_first_dimension() {
        assert_eq!(request_rows(&[f32s(vec![3, 2], &[0.0; 6])]), Some(3));
        assert_eq!(request_rows(&[f32s(vec![], &[1.0])]), None);
        let mixed = [f32s(vec![2, 1], &[0.0; 2]), f32s(vec![3], &[0.0; 3])];
        assert_eq!(request_rows(&mixed), None);
    }

    #[test]
    fn concat_then_split_gives_each_part_back() {
        let a = f32s(vec![1, 2], &[1.0, 2.0]);
        let b = f32s(vec![2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let joined = concat(&[&a, &b]);
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(
            joined.to_vec::<f32>().unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(split(&joined, &[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn strings_concat_and_split() {
        let a = Tensor::from_strings(vec![1], vec![b"x".to_vec()]).unwrap();
        let b = Tensor::from_strings(vec![2], vec![b"\xff".to_vec(), Vec::new()]).unwrap();
        let joined = concat(&[&a, &b]);
        assert_eq!(split(&joined, &[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn split_drops_padding_rows_and_refuses_short_tensors() {
        let t = f32s(vec![4], &[1.0, 2.0, 3.0, 4.0]);
        let pieces = split(&t, &[1, 2]).unwrap();
        assert_eq!(pieces[1].to_vec::<f32>().unwrap(), [2.0, 3.0]);
        assert!(split(&t, &[3, 2]).is_none());
        assert!(split(&f32s(vec![], &[1.0]), &[1]).is_none());
    }

    #[test]
    fn pad_rows_repeats_the_first_row() {
        let t = f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let padded = pad_rows(&t, 2);
        assert_eq!(padded.shape(), &[4, 2]);
        assert_eq!(
            padded.to_vec::<f32>().unwrap(),
            [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 1.0, 2.0]
        );
    }

    #[test]
    fn pad_to_fills_new_cells_with_the_first_element() {
        let t = f32s(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let padded = pad_to(&t, &[3]).unwrap();
        assert_eq!(padded.shape(), &[2, 3]);
        assert_eq!(
            padded.to_vec::<f32>().unwrap(),
            [1.0, 2.0, 1.0, 3.0, 4.0, 1.0]
        );
        assert!(pad_to(&t, &[1]).is_none(), "never shrinks");
        let s = Tensor::from_strings(vec![1, 1], vec![b"a".to_vec()]).unwrap();
        assert_eq!(
            pad_to(&s, &[2]).unwrap().strings().unwrap(),
            [b"a".to_vec(), b"a".to_vec()]
        );
    }
}
