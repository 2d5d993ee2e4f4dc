//! Floating-point numbers as TF Serving writes them in JSON answers (`WriteDecimal` in
//! `json_tensor.cc`), so that the bytes match: six significant digits (`absl::StrCat`,
//! C's `%g`) if they read back as the same number, else `%.9g` for float32 and `%.17g`
//! for float64; `.0` after a whole number in plain notation; `NaN`, `Infinity` and
//! `-Infinity` as bare tokens. iris's first score is `0.972686529`, where the shortest
//! decimal that reads back is `0.9726865`.

use std::fmt::Write as _;

/// A float32 output value as TF Serving writes it.
pub(crate) fn float32(x: f32) -> String {
    if !x.is_finite() {
        return non_finite(f64::from(x));
    }
    let mut buffer = zmij::Buffer::new();
    let shortest = Decimal::parse(buffer.format_finite(x));
    let normal = x == 0.0 || x.abs() >= f32::MIN_POSITIVE;
    // Six digits read back exactly when the shortest decimal has at most six, and then
    // they are its digits: a normal float is closer to it than half a step of the sixth
    // digit (not so for subnormals, whose steps are coarser: they go TF Serving's way).
    let nine = || nine_digits(x, shortest.exponent).map(|nine| nine.g(9));
    let text = match (normal, shortest.len <= 6) {
        (true, true) => shortest.g(6),
        (true, false) => nine().unwrap_or_else(|| {
            exact_decimal(f64::from(x), 9, |text| text.parse::<f32>().ok() == Some(x))
        }),
        (false, _) => exact_decimal(f64::from(x), 9, |text| text.parse::<f32>().ok() == Some(x)),
    };
    plain_whole(text)
}

/// A float64 output value as TF Serving writes it.
pub(crate) fn float64(x: f64) -> String {
    if !x.is_finite() {
        return non_finite(x);
    }
    let mut buffer = zmij::Buffer::new();
    let shortest = Decimal::parse(buffer.format_finite(x));
    let text = if (x == 0.0 || x.abs() >= f64::MIN_POSITIVE) && shortest.len <= 6 {
        shortest.g(6)
    } else {
        exact_decimal(x, 17, |text| text.parse::<f64>().ok() == Some(x))
    };
    plain_whole(text)
}

fn non_finite(x: f64) -> String {
    soma_core::json::non_finite_name(x).to_string()
}

/// TF Serving adds `.0` to a whole number in plain notation.
fn plain_whole(mut text: String) -> String {
    if !text.contains(['.', 'e']) {
        text.push_str(".0");
    }
    text
}

/// TF Serving's way, step by step: six digits if they read back, else `max_digits`, each
/// rounded from the exact binary value (as printf does, and Rust's `{:.N e}`).
fn exact_decimal(x: f64, max_digits: usize, reads_back: impl Fn(&str) -> bool) -> String {
    let six = format_g(x, 6);
    if reads_back(&six) {
        six
    } else {
        format_g(x, max_digits)
    }
}

/// `x` rounded to nine significant digits with one multiplication in float64, when that
/// is exact enough to round right: `None` near a tie, left to [`exact_decimal`].
/// `exponent` is a guess of `x`'s power of ten (the shortest decimal's, which may be one
/// above, as 10 for 9.9999995).
fn nine_digits(x: f32, mut exponent: i32) -> Option<Decimal> {
    let v = f64::from(x).abs();
    for _ in 0..3 {
        // 10^(8 - exponent) as the nearest float64 (exact up to 10^22); with the product's
        // rounding, `scaled` is within 3e-7 of the exact value, which is below 1e9.
        let scaled = v * pow10(8 - exponent)?;
        if scaled < 1e8 {
            exponent -= 1;
            continue;
        }
        if scaled >= 1e9 {
            exponent += 1;
            continue;
        }
        let whole = scaled.floor();
        let fraction = scaled - whole;
        if (fraction - 0.5).abs() < 1e-4 {
            return None;
        }
        let mut n = whole as u64 + u64::from(fraction > 0.5);
        if n == 1_000_000_000 {
            n = 100_000_000;
            exponent += 1;
        }
        return Some(Decimal::from_integer(x < 0.0, n, exponent));
    }
    None
}

/// 10^k for the powers float32 values need, as the nearest float64.
fn pow10(k: i32) -> Option<f64> {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (-64..=64)
            .map(|k| format!("1e{k}").parse().expect("a power of ten"))
            .collect()
    });
    table.get(usize::try_from(k + 64).ok()?).copied()
}

/// A decimal number: its significant digits (no leading or trailing zeros; `0` for zero)
/// and the power of ten of the first.
#[derive(Debug, PartialEq)]
struct Decimal {
    negative: bool,
    digits: [u8; 24],
    len: usize,
    exponent: i32,
}

impl Decimal {
    fn new(negative: bool, significant: impl Iterator<Item = u8>, exponent: i32) -> Decimal {
        let mut d = Decimal {
            negative,
            digits: [b'0'; 24],
            len: 0,
            exponent,
        };
        for digit in significant.take(24) {
            d.digits[d.len] = digit;
            d.len += 1;
        }
        while d.len > 1 && d.digits[d.len - 1] == b'0' {
            d.len -= 1;
        }
        d.len = d.len.max(1);
        d
    }

    /// `n` (nine digits) times 10^(exponent - 8).
    fn from_integer(negative: bool, n: u64, exponent: i32) -> Decimal {
        let mut text = [0u8; 20];
        let mut at = text.len();
        let mut n = n;
        while n > 0 {
            at -= 1;
            text[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        Decimal::new(negative, text[at..].iter().copied(), exponent)
    }

    /// Reads a number as Rust's and zmij's formatters write it (`-0.0123`, `1.5e-7`,
    /// `1e10`, `12345.0`).
    fn parse(text: &str) -> Decimal {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, power) = match text.split_once(['e', 'E']) {
            Some((m, p)) => (m, p.parse::<i32>().unwrap_or(0)),
            None => (text, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = whole.bytes().chain(fraction.bytes());
        let leading = all.clone().take_while(|b| *b == b'0').count();
        if leading == whole.len() + fraction.len() {
            return Decimal::new(negative, std::iter::once(b'0'), 0);
        }
        Decimal::new(
            negative,
            all.skip(leading),
            whole.len() as i32 - 1 - leading as i32 + power,
        )
    }

    /// C's `%.{precision}g` of this number, whose digits are at most `precision`: plain
    /// notation for exponents from -4 to `precision - 1`, scientific (`1.5e+10`, `1e-05`)
    /// otherwise, no trailing zeros.
    fn g(&self, precision: usize) -> String {
        let digits = std::str::from_utf8(&self.digits[..self.len]).unwrap_or("0");
        let mut out = String::with_capacity(24);
        if self.negative {
            out.push('-');
        }
        let exponent = self.exponent;
        if exponent < -4 || exponent >= precision as i32 {
            out.push_str(&digits[..1]);
            if digits.len() > 1 {
                out.push('.');
                out.push_str(&digits[1..]);
            }
            let sign = if exponent < 0 { '-' } else { '+' };
            let _ = write!(out, "e{sign}{:02}", exponent.unsigned_abs());
        } else if exponent < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(digits);
        } else {
            let whole = exponent as usize + 1;
            if digits.len() <= whole {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', whole - digits.len()));
            } else {
                out.push_str(&digits[..whole]);
                out.push('.');
                out.push_str(&digits[whole..]);
            }
        }
        out
    }
}

/// C's `printf("%.{precision}g", x)` for a finite `x`.
fn format_g(x: f64, precision: usize) -> String {
    // Rust rounds the exact binary value to the digits asked for, as printf does.
    let exact = format!("{:.*e}", precision - 1, x);
    Decimal::parse(&exact).g(precision)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `%g` as C's printf writes it (the right-hand sides are Python's `'%.6g' % x` and
    /// `'%.9g' % x`, which call it).
    #[test]
    fn g_format_is_printfs() {
        for (x, six, nine) in [
            (0.972_686_529_159_545_9, "0.972687", "0.972686529"),
            (1234567.0, "1.23457e+06", "1234567"),
            (123456.0, "123456", "123456"),
            (100000.0, "100000", "100000"),
            (1e-5, "1e-05", "1e-05"),
            (0.0001, "0.0001", "0.0001"),
            (0.000_123_456_7, "0.000123457", "0.0001234567"),
            (-2.5, "-2.5", "-2.5"),
            (1.5e10, "1.5e+10", "1.5e+10"),
            (9.999_999_5, "10", "9.9999995"),
            (1e100, "1e+100", "1e+100"),
            (-0.0, "-0", "-0"),
        ] {
            assert_eq!(format_g(x, 6), six, "{x}");
            assert_eq!(format_g(x, 9), nine, "{x}");
        }
    }

    /// Values as TF Serving's REST API writes them.
    #[test]
    fn decimals_are_tf_servings() {
        assert_eq!(float32(0.972_686_5), "0.972686529");
        assert_eq!(float32(7.224_004), "7.22400379");
        assert_eq!(float32(1.0), "1.0");
        assert_eq!(float32(0.5), "0.5");
        assert_eq!(float32(0.1), "0.1");
        assert_eq!(float32(1e-5), "1e-05");
        assert_eq!(float32(1_234_567.0), "1234567.0");
        assert_eq!(float32(f32::MAX), "3.40282347e+38");
        assert_eq!(float32(-0.0), "-0.0");
        assert_eq!(float32(f32::NAN), "NaN");
        assert_eq!(float32(f32::NEG_INFINITY), "-Infinity");
        // Subnormals, whose six digits may read back where the shortest has more.
        assert_eq!(float32(f32::from_bits(1)), "1.4013e-45");
        assert_eq!(float32(f32::from_bits(0x0040_0000)), "5.87747175e-39");
        assert_eq!(float32(0.999_999_94), "0.99999994");
        assert_eq!(float32(16_777_215.0), "16777215.0");
        assert_eq!(float64(0.1), "0.1");
        assert_eq!(float64(1.0 / 3.0), "0.33333333333333331");
        assert_eq!(float64(2.0), "2.0");
        assert_eq!(float64(f64::INFINITY), "Infinity");
        // Every printed value reads back as the value.
        for bits in (0..u32::MAX).step_by(7_919_993) {
            let x = f32::from_bits(bits);
            if x.is_finite() {
                assert_eq!(float32(x).parse::<f32>().unwrap(), x, "{x:e}");
            }
        }
    }
}
