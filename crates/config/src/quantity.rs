//! Kubernetes quantities, as Cortex accepted them for `compute` and `shm_size`.

/// The value of a quantity in base units (cores or bytes): `500m` → 0.5, `1.5` → 1.5,
/// `2Gi` → 2³¹, `1e3` → 1000. Negative or malformed quantities give `None`.
pub(crate) fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(value * factor).filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory_quantities() {
        assert_eq!(parse("200m"), Some(0.2));
        assert_eq!(parse("0.5"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("20Mi"), Some(20.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1K"), Some(1e3));
        assert_eq!(parse("512Ki"), Some(512.0 * 1024.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1048576"), Some(1_048_576.0));
        for bad in ["", "x", "12Xi", "-1", "m", ".", "1.2.3"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
