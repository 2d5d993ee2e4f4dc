//! Kubernetes quantities, as Cortex accepted them for `compute`.

/// CPU in millicores: `1`, `0.5`, `500m`.
pub(crate) fn cpu_millis(text: &str) -> Option<f64> {
    let text = text.trim();
    match text.strip_suffix('m') {
        Some(millis) => millis.parse::<f64>().ok(),
        None => text.parse::<f64>().ok().map(|cores| cores * 1000.0),
    }
    .filter(|m| m.is_finite() && *m >= 0.0)
}

/// Memory in bytes: `128Mi`, `1Gi`, `500M`, `1000`.
pub(crate) fn bytes(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * factor)
        .filter(|b| b.is_finite() && *b >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(cpu_millis("200m"), Some(200.0));
        assert_eq!(cpu_millis("0.5"), Some(500.0));
        assert_eq!(cpu_millis("2"), Some(2000.0));
        assert_eq!(cpu_millis("x"), None);
        assert_eq!(bytes("20Mi"), Some(20.0 * 1024.0 * 1024.0));
        assert_eq!(bytes("1G"), Some(1e9));
        assert_eq!(bytes("12Xi"), None);
    }
}
