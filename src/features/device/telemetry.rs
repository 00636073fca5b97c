//! Presence as telemetry: hearth's own payload for a sensor's readings, carried in its
//! presence beside the human text of `<status/>` (namespace `urn:hearth:telemetry:0`).
//!
//! ```xml
//! <presence>
//!   <status>21.5 °C · 48 %</status>
//!   <telemetry xmlns='urn:hearth:telemetry:0'>
//!     <value name='temperature' unit='°C'>21.5</value>
//!     <value name='humidity' unit='%'>48</value>
//!   </telemetry>
//! </presence>
//! ```
//!
//! The shape follows XEP-0323's numeric and string fields (a name, a unit, the value as
//! text), much reduced: XEP-0323 was retracted by its author, and presence needs only
//! "the latest value of each quantity". Rules:
//! - `<telemetry/>` holds `<value/>` children only, at most [`MAX_VALUES`];
//! - `name`: 1 to [`MAX_NAME`] characters of `a-z 0-9 _ . -`, unique in the element;
//! - `unit`: optional, at most [`MAX_UNIT`] characters, free text (`°C`, `%`, `hPa`);
//! - the value: the element's text, at most [`MAX_VALUE`] characters, free text (a
//!   number is written as in `21.5`, but "open" or "on" are values too).
//!
//! A server hands the element on unchanged; it enforces only the size limits (too many
//! values, a name, unit or value too long: [`TelemetryError::is_limit`]), as a server
//! passes any presence extension it does not own. The other rules are for the
//! element's readers: [`Telemetry::parse`] checks them all, for tests, the MQTT bridge
//! and tools that build it. Pure: no I/O.

use crate::xml::Element;
use std::fmt;

/// The namespace of `<telemetry/>`; the `0` is its version.
pub const NS_TELEMETRY: &str = "urn:hearth:telemetry:0";
/// The most values one element carries.
pub const MAX_VALUES: usize = 32;
/// The longest name, in characters.
pub const MAX_NAME: usize = 64;
/// The longest unit, in characters.
pub const MAX_UNIT: usize = 32;
/// The longest value, in characters.
pub const MAX_VALUE: usize = 256;

/// One reading: `<value name=… unit=…>text</value>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub name: String,
    pub unit: Option<String>,
    pub value: String,
}

/// A `<telemetry/>` element's readings, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    pub values: Vec<Reading>,
}

/// What is wrong with a `<telemetry/>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TelemetryError {
    /// Not `<telemetry xmlns='urn:hearth:telemetry:0'/>` at all.
    NotTelemetry,
    /// More than [`MAX_VALUES`] values (the number found).
    TooManyValues(usize),
    /// A name longer than [`MAX_NAME`] characters.
    NameTooLong(String),
    /// The value named is longer than [`MAX_VALUE`] characters.
    ValueTooLong(String),
    /// The unit of the value named is longer than [`MAX_UNIT`] characters.
    UnitTooLong(String),
    /// A `<value/>` without a name, or an empty one.
    MissingName,
    /// A name with a character outside `a-z 0-9 _ . -`.
    BadName(String),
    /// Two values with the same name.
    DuplicateName(String),
    /// A child other than `<value/>` in the namespace (its name), or a `<value/>` with
    /// element children.
    Unexpected(String),
}

impl TelemetryError {
    /// Whether this is a size limit the server enforces (the rest is passed on).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            TelemetryError::TooManyValues(_)
                | TelemetryError::NameTooLong(_)
                | TelemetryError::ValueTooLong(_)
                | TelemetryError::UnitTooLong(_)
        )
    }
}

impl fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TelemetryError::NotTelemetry => write!(f, "not a <telemetry xmlns='{NS_TELEMETRY}'/>"),
            TelemetryError::TooManyValues(n) => {
                write!(
                    f,
                    "telemetry has {n} values; at most {MAX_VALUES} are allowed"
                )
            }
            TelemetryError::NameTooLong(name) => write!(
                f,
                "telemetry value name {:?}… is longer than {MAX_NAME} characters",
                prefix(name)
            ),
            TelemetryError::ValueTooLong(name) => write!(
                f,
                "telemetry value {:?} is longer than {MAX_VALUE} characters",
                prefix(name)
            ),
            TelemetryError::UnitTooLong(name) => write!(
                f,
                "the unit of telemetry value {:?} is longer than {MAX_UNIT} characters",
                prefix(name)
            ),
            TelemetryError::MissingName => f.write_str("a telemetry value has no name"),
            TelemetryError::BadName(name) => write!(
                f,
                "telemetry value name {:?} has characters other than a-z 0-9 _ . -",
                prefix(name)
            ),
            TelemetryError::DuplicateName(name) => {
                write!(f, "telemetry value {:?} is given twice", prefix(name))
            }
            TelemetryError::Unexpected(what) => {
                write!(f, "unexpected <{}/> in telemetry", prefix(what))
            }
        }
    }
}

impl std::error::Error for TelemetryError {}

/// The first characters of a name, for an error message that must stay short.
fn prefix(s: &str) -> &str {
    match s.char_indices().nth(MAX_NAME) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether `name` is 1 to [`MAX_NAME`] characters of `a-z 0-9 _ . -`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// The `<telemetry/>` child of a presence, if it has one.
pub fn find(presence: &Element) -> Option<&Element> {
    presence.get_child("telemetry", NS_TELEMETRY)
}

/// The size limits only (what a server enforces, see the module's doc): the number
/// of `<value/>` children and the length of each name, unit and value. Anything else
/// about the element passes.
pub fn check_limits(el: &Element) -> Result<(), TelemetryError> {
    let values: Vec<&Element> = el.children().filter(|c| c.name() == "value").collect();
    if values.len() > MAX_VALUES {
        return Err(TelemetryError::TooManyValues(values.len()));
    }
    for v in values {
        let name = v.attr("name").unwrap_or_default();
        if name.chars().count() > MAX_NAME {
            return Err(TelemetryError::NameTooLong(name.to_owned()));
        }
        if v.attr("unit").is_some_and(|u| u.chars().count() > MAX_UNIT) {
            return Err(TelemetryError::UnitTooLong(name.to_owned()));
        }
        if v.text().chars().count() > MAX_VALUE {
            return Err(TelemetryError::ValueTooLong(name.to_owned()));
        }
    }
    Ok(())
}

impl Telemetry {
    /// Reads a `<telemetry/>` element, checking every rule of the module's doc.
    pub fn parse(el: &Element) -> Result<Telemetry, TelemetryError> {
        if !el.is("telemetry", NS_TELEMETRY) {
            return Err(TelemetryError::NotTelemetry);
        }
        check_limits(el)?;
        let mut values: Vec<Reading> = Vec::new();
        for child in el.children() {
            if !child.is("value", NS_TELEMETRY) {
                return Err(TelemetryError::Unexpected(child.name().to_owned()));
            }
            if let Some(inner) = child.children().next() {
                return Err(TelemetryError::Unexpected(inner.name().to_owned()));
            }
            let name = match child.attr("name") {
                None | Some("") => return Err(TelemetryError::MissingName),
                Some(n) if !is_valid_name(n) => return Err(TelemetryError::BadName(n.into())),
                Some(n) => n,
            };
            if values.iter().any(|r| r.name == name) {
                return Err(TelemetryError::DuplicateName(name.to_owned()));
            }
            values.push(Reading {
                name: name.to_owned(),
                unit: child.attr("unit").map(str::to_owned),
                value: child.text(),
            });
        }
        Ok(Telemetry { values })
    }

    /// The element, in [`NS_TELEMETRY`].
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("telemetry", NS_TELEMETRY);
        for r in &self.values {
            let mut v = Element::new("value", NS_TELEMETRY).with_attr("name", r.name.as_str());
            if let Some(unit) = &r.unit {
                v.set_attr("unit", unit.as_str());
            }
            el.push_child(v.with_text(r.value.as_str()));
        }
        el
    }

    /// The human text for `<status/>`: each value with its unit, separated by ` · `
    /// (`21.5 °C · 48 %`).
    pub fn status_text(&self) -> String {
        self.values
            .iter()
            .map(|r| match &r.unit {
                Some(u) if !u.is_empty() => format!("{} {u}", r.value),
                _ => r.value.clone(),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The value named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Reading> {
        self.values.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_fragment;

    const EXAMPLE: &str = "<telemetry xmlns='urn:hearth:telemetry:0'>\
        <value name='temperature' unit='°C'>21.5</value>\
        <value name='humidity' unit='%'>48</value></telemetry>";

    fn el(xml: &str) -> Element {
        parse_fragment(xml).unwrap_or_else(|| panic!("not xml: {xml}"))
    }

    fn values(n: usize) -> String {
        let mut s = String::from("<telemetry xmlns='urn:hearth:telemetry:0'>");
        for i in 0..n {
            s.push_str(&format!("<value name='v{i}'>{i}</value>"));
        }
        s + "</telemetry>"
    }

    #[test]
    fn parses_the_documented_example() {
        let t = Telemetry::parse(&el(EXAMPLE)).unwrap();
        assert_eq!(t.values.len(), 2);
        let temp = t.get("temperature").unwrap();
        assert_eq!(temp.value, "21.5");
        assert_eq!(temp.unit.as_deref(), Some("°C"));
        assert_eq!(t.status_text(), "21.5 °C · 48 %");
    }

    #[test]
    fn round_trips() {
        let t = Telemetry {
            values: vec![
                Reading {
                    name: "door".into(),
                    unit: None,
                    value: "open <& \"quoted\"".into(),
                },
                Reading {
                    name: "battery.voltage".into(),
                    unit: Some("V".into()),
                    value: "3.71".into(),
                },
            ],
        };
        let xml = t.to_element().to_xml_in("");
        let back = Telemetry::parse(&el(&xml)).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.status_text(), "open <& \"quoted\" · 3.71 V");
        // The documented example reads back to the same element.
        let parsed = Telemetry::parse(&el(EXAMPLE)).unwrap();
        assert_eq!(parsed.to_element(), el(EXAMPLE));
    }

    #[test]
    fn limits() {
        assert_eq!(
            Telemetry::parse(&el(&values(MAX_VALUES)))
                .unwrap()
                .values
                .len(),
            32
        );
        let e = Telemetry::parse(&el(&values(MAX_VALUES + 1))).unwrap_err();
        assert_eq!(e, TelemetryError::TooManyValues(33));
        assert!(e.is_limit());
        assert_eq!(
            e.to_string(),
            "telemetry has 33 values; at most 32 are allowed"
        );
        let long_name = "n".repeat(MAX_NAME + 1);
        let e = check_limits(&el(&format!(
            "<telemetry xmlns='urn:hearth:telemetry:0'><value name='{long_name}'>1</value></telemetry>"
        )))
        .unwrap_err();
        assert!(matches!(e, TelemetryError::NameTooLong(_)), "{e:?}");
        assert!(e.is_limit());
        let ok_name = "n".repeat(MAX_NAME);
        assert!(is_valid_name(&ok_name));
        let long_value = "9".repeat(MAX_VALUE + 1);
        let e = Telemetry::parse(&el(&format!(
            "<telemetry xmlns='urn:hearth:telemetry:0'><value name='t'>{long_value}</value></telemetry>"
        )))
        .unwrap_err();
        assert_eq!(e, TelemetryError::ValueTooLong("t".into()));
        // Characters, not bytes: 256 two-byte characters are fine.
        let wide = "é".repeat(MAX_VALUE);
        assert!(check_limits(&el(&format!(
            "<telemetry xmlns='urn:hearth:telemetry:0'><value name='t'>{wide}</value></telemetry>"
        )))
        .is_ok());
        let e = check_limits(&el(&format!(
            "<telemetry xmlns='urn:hearth:telemetry:0'><value name='t' unit='{}'>1</value></telemetry>",
            "u".repeat(MAX_UNIT + 1)
        )))
        .unwrap_err();
        assert_eq!(e, TelemetryError::UnitTooLong("t".into()));
    }

    /// What is malformed but within the limits: `parse` refuses it, `check_limits`
    /// (the server's rule) passes it.
    #[test]
    fn malformed_but_within_limits() {
        let cases = [
            ("<value>1</value>", TelemetryError::MissingName),
            ("<value name=''>1</value>", TelemetryError::MissingName),
            (
                "<value name='Temp'>1</value>",
                TelemetryError::BadName("Temp".into()),
            ),
            (
                "<value name='a b'>1</value>",
                TelemetryError::BadName("a b".into()),
            ),
            (
                "<value name='t'>1</value><value name='t'>2</value>",
                TelemetryError::DuplicateName("t".into()),
            ),
            (
                "<reading name='t'>1</reading>",
                TelemetryError::Unexpected("reading".into()),
            ),
            (
                "<value name='t'><b>1</b></value>",
                TelemetryError::Unexpected("b".into()),
            ),
        ];
        for (inner, want) in cases {
            let e = el(&format!(
                "<telemetry xmlns='urn:hearth:telemetry:0'>{inner}</telemetry>"
            ));
            assert_eq!(Telemetry::parse(&e).unwrap_err(), want, "{inner}");
            assert!(!want.is_limit());
            assert!(check_limits(&e).is_ok(), "{inner}");
        }
        assert_eq!(
            Telemetry::parse(&el("<telemetry xmlns='urn:example'/>")).unwrap_err(),
            TelemetryError::NotTelemetry
        );
        // Empty is fine: a device with nothing to report yet.
        assert_eq!(
            Telemetry::parse(&el("<telemetry xmlns='urn:hearth:telemetry:0'/>")).unwrap(),
            Telemetry::default()
        );
    }

    #[test]
    fn found_in_a_presence() {
        let p = el(&format!(
            "<presence xmlns='jabber:client'><status>21.5 °C · 48 %</status>{EXAMPLE}</presence>"
        ));
        let t = Telemetry::parse(find(&p).unwrap()).unwrap();
        assert_eq!(t.values.len(), 2);
        assert!(find(&el("<presence xmlns='jabber:client'/>")).is_none());
    }

    #[test]
    fn names() {
        for ok in ["temperature", "battery.voltage", "pm2_5", "co2-ppm", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Temperature", "température", "a/b", "a b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
