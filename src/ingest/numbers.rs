//! Finding numbers in text and JSON, for [`super::Ingest::numbers`] and for
//! reading cell values.

use serde_json::Value;

/// Parses the number at the start of `s`: optional sign, digits with optional
/// thousands separators (`1,024`, Indian `22,80,000`), fraction, exponent.
/// Returns the value and how many bytes it used.
pub(crate) fn number_prefix(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    // Only numbers with thousands separators need a copy without the commas.
    let mut digits: Option<String> = None;
    let first_group = i - int_start;
    if (1..=3).contains(&first_group) && i < b.len() && b[i] == b',' {
        let (mut j, mut joined, mut last_len) = (i, String::new(), 0);
        while j < b.len() && b[j] == b',' {
            let g0 = j + 1;
            let mut k = g0;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            if !(2..=3).contains(&(k - g0)) {
                break;
            }
            joined.push_str(&s[g0..k]);
            last_len = k - g0;
            j = k;
        }
        // The last group must have three digits; a following digit or comma
        // means this was a list, not a grouped number.
        if last_len == 3 {
            let mut d = String::with_capacity(j);
            d.push_str(&s[..i]);
            d.push_str(&joined);
            digits = Some(d);
            i = j;
        }
    }
    let grouped_end = i;
    let mut has_digits = i > int_start;
    if i < b.len() && b[i] == b'.' {
        let mut k = i + 1;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        if k > i + 1 {
            has_digits = true;
            i = k;
        } else if has_digits {
            i += 1; // "12." is 12
        }
    }
    if !has_digits {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut k = i + 1;
        if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
            k += 1;
        }
        let d0 = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        if k > d0 {
            i = k;
        }
    }
    let v: f64 = match digits {
        Some(mut d) => {
            d.push_str(&s[grouped_end..i]);
            d.parse().ok()?
        }
        None => s[..i].parse().ok()?,
    };
    v.is_finite().then_some((v, i))
}

/// Appends every number written in `text`. A sign counts only at the start
/// or after a character that is not a letter or digit (so `2025-10-02`
/// gives 2025, 10, 2).
pub(crate) fn scan_text(text: &str, out: &mut Vec<f64>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_alnum = i > 0 && b[i - 1].is_ascii_alphanumeric();
        let prev_digit = i > 0 && b[i - 1].is_ascii_digit();
        let next_digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
        let starts = c.is_ascii_digit()
            || (c == b'.' && !prev_digit && next_digit(i + 1))
            || ((c == b'-' || c == b'+')
                && !prev_alnum
                && (next_digit(i + 1) || (b.get(i + 1) == Some(&b'.') && next_digit(i + 2))));
        if starts {
            if let Some((v, len)) = number_prefix(&text[i..]) {
                out.push(v);
                i += len.max(1);
                continue;
            }
        }
        i += 1;
    }
}

/// Appends JSON numbers and the numbers written inside JSON strings.
pub(crate) fn scan_json(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push(f);
            }
        }
        Value::String(s) => scan_text(s, out),
        Value::Array(a) => a.iter().for_each(|x| scan_json(x, out)),
        Value::Object(m) => m.values().for_each(|x| scan_json(x, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Finite values, ascending, each once (-0 counts as 0).
pub(crate) fn sort_dedup(mut v: Vec<f64>) -> Vec<f64> {
    v.retain(|x| x.is_finite());
    for x in &mut v {
        *x += 0.0;
    }
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(s: &str) -> Vec<f64> {
        let mut v = Vec::new();
        scan_text(s, &mut v);
        v
    }

    #[test]
    fn numbers_in_text() {
        assert_eq!(
            scan("Mean TTFT: 0.165 s, 102.85 tok/s"),
            vec![0.165, 102.85]
        );
        assert_eq!(
            scan("| 3,503 | 1,024 | 75.7% |"),
            vec![3503.0, 1024.0, 75.7]
        );
        assert_eq!(scan("2025-10-02"), vec![2025.0, 10.0, 2.0]);
        assert_eq!(
            scan("delta -9449.32 and +.5 and gpu60_ctx512"),
            vec![-9449.32, 0.5, 60.0, 512.0]
        );
        assert_eq!(
            scan("(999, 80, 60, 40) 1,2"),
            vec![999.0, 80.0, 60.0, 40.0, 1.0, 2.0]
        );
        assert_eq!(
            scan("12,87,80,86,144 bytes; 1e-3; 2e"),
            vec![12_878_086_144.0, 0.001, 2.0]
        );
        assert_eq!(scan("v1.2.3"), vec![1.2, 3.0]);
        assert_eq!(scan("no numbers"), Vec::<f64>::new());
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(number_prefix("12.5 ms"), Some((12.5, 4)));
        assert_eq!(number_prefix("1,024,"), Some((1024.0, 5)));
        assert_eq!(number_prefix("10,20"), Some((10.0, 2)));
        assert_eq!(number_prefix("-"), None);
        assert_eq!(number_prefix("."), None);
    }

    #[test]
    fn dedup() {
        assert_eq!(
            sort_dedup(vec![2.0, -0.0, 0.0, f64::NAN, 2.0, 1.0]),
            vec![0.0, 1.0, 2.0]
        );
    }
}
