//! Words and numbers for people: sizes, times, generated document names.

use wasm_bindgen::prelude::*;

/// `1.2 KB`, `3.4 MB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// How long ago, for the document list: `just now`, `5 min ago`, `3 h ago`, or a date.
pub fn format_ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..=44 => "just now".into(),
        45..=3_599 => format!("{} min ago", ((secs + 30) / 60).max(1)),
        3_600..=86_399 => format!("{} h ago", secs / 3_600),
        86_400..=172_799 => "yesterday".into(),
        _ => {
            let date = js_sys::Date::new(&JsValue::from_f64(then_ms as f64));
            String::from(date.to_locale_date_string("default", &JsValue::UNDEFINED))
        }
    }
}

/// Local time of day, `14:05`.
pub fn format_clock(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}

/// Full local date and time, for tooltips.
pub fn format_datetime(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
}

/// A name for a new document when the user gives none: `quiet-harbor-42`.
pub fn generated_doc_name(random: u64) -> String {
    const ADJECTIVES: [&str; 16] = [
        "amber", "brisk", "calm", "daring", "eager", "gentle", "golden", "hidden", "lively",
        "mellow", "nimble", "quiet", "rapid", "silver", "sunny", "vivid",
    ];
    const NOUNS: [&str; 16] = [
        "atlas", "brook", "canyon", "delta", "ember", "fjord", "grove", "harbor", "island",
        "meadow", "orchard", "prairie", "river", "summit", "valley", "willow",
    ];
    format!(
        "{}-{}-{}",
        ADJECTIVES[(random & 15) as usize],
        NOUNS[((random >> 4) & 15) as usize],
        (random >> 8) % 90 + 10
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(1_234), "1.2 KB");
        assert_eq!(format_bytes(45_000), "45 KB");
        assert_eq!(format_bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn generated_names_are_valid_document_names() {
        for seed in [0, 1, 12345, u64::MAX] {
            let name = generated_doc_name(seed);
            assert!(quire_protocol::DocName::parse(&name).is_ok(), "{name}");
        }
    }
}
