//! TF Serving's REST URL grammar (`http_rest_api_util.cc`), matched case-insensitively:
//!
//! * POST `/v1/models/{name}[/versions/{n} | /labels/{label}]:(predict|classify|regress)`
//! * GET  `/v1/models[/{name}][/versions/{n} | /labels/{label}][/metadata]`
//!
//! Names and labels are URL-unescaped; the version must be an int64.

use soma_runtime::VersionSelector;

use crate::error::RestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Predict,
    Classify,
    Regress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Status {
        model: String,
        version: Option<VersionSelector>,
    },
    Metadata {
        model: String,
        version: VersionSelector,
    },
    Infer {
        model: String,
        version: VersionSelector,
        method: Method,
    },
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn strip_suffix_ci<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let tail = text.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &text[..cut])
}

/// Parses a request path; `None` when it is not a TF Serving path at all.
pub(crate) fn parse(method: &axum::http::Method, path: &str) -> Result<Route, RestError> {
    let malformed = || RestError::invalid(format!("Malformed request: {method} {path}"));
    let rest = strip_prefix_ci(path, "/v1/models").ok_or_else(malformed)?;
    if *method == axum::http::Method::POST {
        // The first ':' ends the target: TF Serving's pattern allows none in a name or
        // label (`[^/:]+`), so `iris:foo:predict` is malformed, not a model "iris:foo".
        let (target, verb) = rest.split_once(':').ok_or_else(malformed)?;
        let method = match verb.to_ascii_lowercase().as_str() {
            "predict" => Method::Predict,
            "classify" => Method::Classify,
            "regress" => Method::Regress,
            _ => return Err(malformed()),
        };
        let (model, version) = model_and_version(target).ok_or_else(malformed)??;
        let model = model.ok_or_else(malformed)?;
        return Ok(Route::Infer {
            model,
            version: version.unwrap_or(VersionSelector::Latest),
            method,
        });
    }
    if *method != axum::http::Method::GET {
        return Err(malformed());
    }
    if rest.contains(':') {
        return Err(malformed());
    }
    let (target, metadata) = match strip_suffix_ci(rest, "/metadata") {
        Some(target) => (target, true),
        None => (rest, false),
    };
    let (model, version) = model_and_version(target).ok_or_else(malformed)??;
    let Some(model) = model else {
        return Err(RestError::invalid("Missing model name in request."));
    };
    Ok(if metadata {
        Route::Metadata {
            model,
            version: version.unwrap_or(VersionSelector::Latest),
        }
    } else {
        Route::Status { model, version }
    })
}

type Target = (Option<String>, Option<VersionSelector>);

/// `""`, `/{name}`, `/{name}/versions/{n}` or `/{name}/labels/{l}`; `None` if it is none of
/// them, `Some(Err)` for a version that is not an int64.
fn model_and_version(target: &str) -> Option<Result<Target, RestError>> {
    if target.is_empty() {
        return Some(Ok((None, None)));
    }
    let parts: Vec<&str> = target.strip_prefix('/')?.split('/').collect();
    let name = |raw: &str| (!raw.is_empty()).then(|| unescape(raw));
    let target = match parts.as_slice() {
        [model] => (Some(name(model)?), None),
        [model, kind, value] if kind.eq_ignore_ascii_case("versions") => {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let Ok(n) = value.parse::<i64>() else {
                return Some(Err(RestError::invalid(format!(
                    "Failed to convert version: {value} to numeric."
                ))));
            };
            (Some(name(model)?), Some(VersionSelector::Number(n)))
        }
        [model, kind, label] if kind.eq_ignore_ascii_case("labels") => (
            Some(name(model)?),
            Some(VersionSelector::Label(name(label)?)),
        ),
        _ => return None,
    };
    Some(Ok(target))
}

/// Percent-decoding (`curl_easy_unescape`); invalid escapes are kept as they are.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use axum::http::Method as M;

    use super::*;

    fn ok(method: M, path: &str) -> Route {
        parse(&method, path).unwrap()
    }

    fn err(method: M, path: &str) -> String {
        parse(&method, path).unwrap_err().message
    }

    #[test]
    fn the_url_grammar() {
        assert_eq!(
            ok(M::POST, "/v1/models/iris:predict"),
            Route::Infer {
                model: "iris".into(),
                version: VersionSelector::Latest,
                method: Method::Predict
            }
        );
        assert_eq!(
            ok(M::POST, "/V1/Models/my%20model/Versions/9:CLASSIFY"),
            Route::Infer {
                model: "my model".into(),
                version: VersionSelector::Number(9),
                method: Method::Classify
            }
        );
        assert_eq!(
            ok(M::POST, "/v1/models/iris/labels/stable:regress"),
            Route::Infer {
                model: "iris".into(),
                version: VersionSelector::Label("stable".into()),
                method: Method::Regress
            }
        );
        assert_eq!(
            ok(M::GET, "/v1/models/iris"),
            Route::Status {
                model: "iris".into(),
                version: None
            }
        );
        assert_eq!(
            ok(M::GET, "/v1/models/iris/versions/2/metadata"),
            Route::Metadata {
                model: "iris".into(),
                version: VersionSelector::Number(2)
            }
        );
        assert_eq!(err(M::GET, "/v1/models"), "Missing model name in request.");
        assert_eq!(
            err(M::POST, "/v1/models/iris:explain"),
            "Malformed request: POST /v1/models/iris:explain"
        );
        assert_eq!(
            err(M::GET, "/v1/models/iris/versions/x"),
            "Malformed request: GET /v1/models/iris/versions/x"
        );
        assert_eq!(
            err(M::GET, "/v1/models/iris/versions/99999999999999999999"),
            "Failed to convert version: 99999999999999999999 to numeric."
        );
        assert_eq!(
            err(M::POST, "/v1/models/iris:foo:predict"),
            "Malformed request: POST /v1/models/iris:foo:predict"
        );
        assert_eq!(
            err(M::POST, "/v1/models/iris/labels/a:b:predict"),
            "Malformed request: POST /v1/models/iris/labels/a:b:predict"
        );
        assert_eq!(
            err(M::POST, "/v1/models/iris/versions/1/labels/a:predict"),
            "Malformed request: POST /v1/models/iris/versions/1/labels/a:predict"
        );
    }
}
