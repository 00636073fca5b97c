//! XEP-0004: Data Forms — building the forms the server sends (`type='form'` and
//! `type='result'`, §3.1) and reading the ones clients submit (`type='submit'`,
//! `type='cancel'`). Used by ad-hoc commands (XEP-0050) and service administration
//! (XEP-0133), whose forms carry a hidden `FORM_TYPE` field (XEP-0068 §2).
//!
//! Only what the server needs: fields with a type, label, values, options and
//! `<required/>`; no `<reported/>` tables, no media (XEP-0221).

use std::borrow::Cow;

use crate::xml::Element;

/// The data forms namespace (XEP-0004 §3).
pub const NS_DATA: &str = "jabber:x:data";

/// Fields read from a submitted form; more is refused, as is a field with more values
/// (a jid-multi of every account is far below either).
const MAX_FIELDS: usize = 64;
const MAX_VALUES: usize = 256;

/// The form's `type` attribute (XEP-0004 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormType {
    /// The server asks for data.
    Form,
    /// The client answers a form.
    Submit,
    /// The client gives up on a form.
    Cancel,
    /// The server reports data.
    Result,
}

impl FormType {
    pub fn as_str(self) -> &'static str {
        match self {
            FormType::Form => "form",
            FormType::Submit => "submit",
            FormType::Cancel => "cancel",
            FormType::Result => "result",
        }
    }

    fn parse(s: &str) -> Option<FormType> {
        Some(match s {
            "form" => FormType::Form,
            "submit" => FormType::Submit,
            "cancel" => FormType::Cancel,
            "result" => FormType::Result,
            _ => return None,
        })
    }
}

/// One `<field/>` of a form being built (XEP-0004 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub var: String,
    /// `text-single`, `text-private`, `jid-multi`, `list-single`, `hidden`, … (§3.3).
    pub kind: &'static str,
    pub label: Option<String>,
    pub is_required: bool,
    pub values: Vec<String>,
    /// For the list types: (label, value).
    pub options: Vec<(String, String)>,
}

impl Field {
    pub fn new(var: impl Into<String>, kind: &'static str) -> Field {
        Field {
            var: var.into(),
            kind,
            label: None,
            is_required: false,
            values: Vec::new(),
            options: Vec::new(),
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Field {
        self.label = Some(label.into());
        self
    }

    pub fn required(mut self) -> Field {
        self.is_required = true;
        self
    }

    pub fn value(mut self, value: impl Into<String>) -> Field {
        self.values.push(value.into());
        self
    }

    pub fn option(mut self, label: impl Into<String>, value: impl Into<String>) -> Field {
        self.options.push((label.into(), value.into()));
        self
    }

    fn to_element(&self) -> Element {
        let mut f = Element::new("field", NS_DATA)
            .with_attr("var", self.var.clone())
            .with_attr("type", self.kind);
        if let Some(l) = &self.label {
            f.set_attr("label", l.clone());
        }
        if self.is_required {
            f.push_child(Element::new("required", NS_DATA));
        }
        for v in &self.values {
            f.push_child(Element::new("value", NS_DATA).with_text(v.clone()));
        }
        for (label, value) in &self.options {
            f.push_child(
                Element::new("option", NS_DATA)
                    .with_attr("label", label.clone())
                    .with_child(Element::new("value", NS_DATA).with_text(value.clone())),
            );
        }
        f
    }
}

/// A form the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    pub kind: FormType,
    pub title: Option<String>,
    pub instructions: Option<String>,
    pub fields: Vec<Field>,
}

impl Form {
    /// A form of `kind` whose first field is the hidden `FORM_TYPE` (XEP-0068 §2).
    pub fn new(kind: FormType, form_type: &str) -> Form {
        Form {
            kind,
            title: None,
            instructions: None,
            fields: vec![Field::new("FORM_TYPE", "hidden").value(form_type)],
        }
    }

    pub fn title(mut self, title: impl Into<String>) -> Form {
        self.title = Some(title.into());
        self
    }

    pub fn instructions(mut self, text: impl Into<String>) -> Form {
        self.instructions = Some(text.into());
        self
    }

    pub fn field(mut self, field: Field) -> Form {
        self.fields.push(field);
        self
    }

    /// The `<x xmlns='jabber:x:data'/>` element.
    pub fn to_element(&self) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", self.kind.as_str());
        if let Some(t) = &self.title {
            x.push_child(Element::new("title", NS_DATA).with_text(t.clone()));
        }
        if let Some(i) = &self.instructions {
            x.push_child(Element::new("instructions", NS_DATA).with_text(i.clone()));
        }
        for f in &self.fields {
            x.push_child(f.to_element());
        }
        x
    }
}

/// Why a submitted form could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// Not `<x xmlns='jabber:x:data'/>`, or its `type` is missing or unknown.
    NotAForm,
    /// More fields or values than the server reads.
    TooLarge,
    /// A field without `var` (only `fixed` fields may lack one, §3.2).
    FieldWithoutVar,
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FormError::NotAForm => "not a data form",
            FormError::TooLarge => "too many fields or values",
            FormError::FieldWithoutVar => "a field has no var",
        })
    }
}

/// A form a client sent: its type and each field's values, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub kind: FormType,
    fields: Vec<(String, Vec<String>)>,
}

impl Submitted {
    /// A submitted form with no fields: what a command with nothing to ask runs with.
    pub fn empty() -> Submitted {
        Submitted {
            kind: FormType::Submit,
            fields: Vec::new(),
        }
    }

    /// Reads `<x xmlns='jabber:x:data' type=…>`.
    pub fn parse(x: &Element) -> Result<Submitted, FormError> {
        if !x.is("x", NS_DATA) {
            return Err(FormError::NotAForm);
        }
        let kind = x
            .attr("type")
            .and_then(FormType::parse)
            .ok_or(FormError::NotAForm)?;
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for f in x.children().filter(|c| c.is("field", NS_DATA)) {
            let Some(var) = f.attr("var") else {
                if f.attr("type") == Some("fixed") {
                    continue;
                }
                return Err(FormError::FieldWithoutVar);
            };
            let values: Vec<String> = f
                .children()
                .filter(|c| c.is("value", NS_DATA))
                .map(Element::text)
                .collect();
            if fields.len() >= MAX_FIELDS || values.len() > MAX_VALUES {
                return Err(FormError::TooLarge);
            }
            // A field given twice: the later one counts, as a form has one value list per var.
            fields.retain(|(v, _)| v != var);
            fields.push((var.to_owned(), values));
        }
        Ok(Submitted { kind, fields })
    }

    /// The `var` of every field, in order (a reader refuses those it does not know).
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(v, _)| v.as_str())
    }

    /// The hidden `FORM_TYPE` value, if any (XEP-0068 §2).
    pub fn form_type(&self) -> Option<&str> {
        self.value("FORM_TYPE")
    }

    /// All values of `var` (empty when it is absent).
    pub fn values(&self, var: &str) -> &[String] {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The first value of `var`, if it has one.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.values(var).first().map(String::as_str)
    }

    /// The first value of `var`, trimmed, if it is not empty: a single-line field as
    /// people type it on a phone.
    pub fn text(&self, var: &str) -> Option<&str> {
        self.value(var).map(str::trim).filter(|s| !s.is_empty())
    }

    /// The values of a multi-line or multi-value field, each trimmed, empty ones left out.
    pub fn lines(&self, var: &str) -> Vec<&str> {
        self.values(var)
            .iter()
            .flat_map(|v| v.lines())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// `xml` (serialized stanzas, as logged at trace level) with the values of every data
/// form field whose `var` names a password (`password`, `password-verify`: XEP-0133's
/// add-user and change-user-password) replaced by their length, so that no log level
/// shows a password (DESIGN.md "Logging"), as `stream::sasl::redact_payloads` does for
/// SASL. Our serializer writes `<field` without a prefix; character data cannot hold a
/// raw `<`, so a `<field` inside a message body is `&lt;field` and left alone.
pub fn redact_password_fields(xml: &str) -> Cow<'_, str> {
    if !xml.contains("<field") {
        return Cow::Borrowed(xml);
    }
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find("<field") {
        let tag = &rest[at..];
        let Some(gt) = tag.find('>') else { break };
        let start_tag = &tag[..=gt];
        let is_field = start_tag[6..].starts_with([' ', '>', '/', '\t', '\n', '\r']);
        out.push_str(&rest[..at + gt + 1]);
        rest = &tag[gt + 1..];
        // Also an invitation's token (XEP-0077's form field `token`, XEP-0401) and the
        // URI carrying one (the invite commands' result field `uri`).
        let is_secret = is_field
            && var_of(start_tag)
                .is_some_and(|v| v.contains("password") || v == "token" || v == "uri");
        if !is_secret || start_tag.ends_with("/>") {
            continue;
        }
        let Some(end) = rest.find("</field>") else {
            // Cut off: hide what is left.
            out.push_str(&format!("[{} bytes redacted]", rest.len()));
            return Cow::Owned(out);
        };
        if end > 0 {
            out.push_str(&format!("[{end} bytes redacted]"));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The `var` attribute's value in a start tag, in either quotes.
fn var_of(start_tag: &str) -> Option<&str> {
    let at = start_tag.find(" var=")? + " var=".len();
    let quote = start_tag[at..].chars().next()?;
    let value = start_tag.get(at + 1..)?;
    value.find(quote).map(|end| &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_form_reads_back_as_submitted() {
        let form = Form::new(FormType::Form, "urn:example")
            .title("Add a user")
            .instructions("Fill it in")
            .field(
                Field::new("accountjid", "jid-single")
                    .label("JID")
                    .required(),
            )
            .field(
                Field::new("max", "list-single")
                    .value("25")
                    .option("25", "25")
                    .option("all", "none"),
            );
        let x = form.to_element();
        assert_eq!(x.attr("type"), Some("form"));
        assert_eq!(
            x.get_child("title", NS_DATA).map(Element::text).as_deref(),
            Some("Add a user")
        );
        let xml = x.to_xml_in("jabber:client");
        assert!(
            xml.contains("<field var=\"FORM_TYPE\" type=\"hidden\"><value>urn:example</value>"),
            "{xml}"
        );
        assert!(xml.contains("<required/>"), "{xml}");
        assert!(
            xml.contains("<option label=\"all\"><value>none</value></option>"),
            "{xml}"
        );
        let read = Submitted::parse(&x).unwrap();
        assert_eq!(read.kind, FormType::Form);
        assert_eq!(read.form_type(), Some("urn:example"));
        assert_eq!(read.value("max"), Some("25"));
        assert_eq!(read.values("accountjid"), &[] as &[String]);
        assert_eq!(read.value("nothing"), None);
    }

    fn submitted(fields: &[(&str, &[&str])]) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "submit");
        for (var, values) in fields {
            let mut f = Element::new("field", NS_DATA).with_attr("var", *var);
            for v in *values {
                f.push_child(Element::new("value", NS_DATA).with_text(*v));
            }
            x.push_child(f);
        }
        x
    }

    #[test]
    fn submitted_values_are_read_trimmed_and_split() {
        let x = submitted(&[
            ("FORM_TYPE", &["urn:example"]),
            ("jid", &["  alice@home.example "]),
            ("blank", &["   "]),
            ("jids", &["a@h", "", " b@h"]),
            ("body", &["line one\n\n line two"]),
        ]);
        let s = Submitted::parse(&x).unwrap();
        assert_eq!(s.kind, FormType::Submit);
        assert_eq!(s.text("jid"), Some("alice@home.example"));
        assert_eq!(s.text("blank"), None);
        assert_eq!(s.lines("jids"), vec!["a@h", "b@h"]);
        assert_eq!(s.lines("body"), vec!["line one", "line two"]);
        // The raw value keeps what was sent (passwords are not trimmed).
        assert_eq!(s.value("jid"), Some("  alice@home.example "));
    }

    #[test]
    fn bad_forms_are_refused() {
        assert_eq!(
            Submitted::parse(&Element::new("x", "urn:other")),
            Err(FormError::NotAForm)
        );
        assert_eq!(
            Submitted::parse(&Element::new("x", NS_DATA)),
            Err(FormError::NotAForm)
        );
        assert_eq!(
            Submitted::parse(&Element::new("x", NS_DATA).with_attr("type", "nonsense")),
            Err(FormError::NotAForm)
        );
        let no_var = Element::new("x", NS_DATA)
            .with_attr("type", "submit")
            .with_child(Element::new("field", NS_DATA));
        assert_eq!(Submitted::parse(&no_var), Err(FormError::FieldWithoutVar));
        let many: Vec<(String, Vec<&str>)> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), vec!["v"]))
            .collect();
        let many: Vec<(&str, &[&str])> = many
            .iter()
            .map(|(v, vals)| (v.as_str(), vals.as_slice()))
            .collect();
        assert_eq!(
            Submitted::parse(&submitted(&many)),
            Err(FormError::TooLarge)
        );
        let cancel = Element::new("x", NS_DATA).with_attr("type", "cancel");
        assert_eq!(Submitted::parse(&cancel).unwrap().kind, FormType::Cancel);
    }

    #[test]
    fn passwords_are_redacted_from_logged_xml() {
        let xml = "<iq><command><x type=\"submit\"><field var=\"accountjid\"><value>carol@h\
                   </value></field><field type=\"text-private\" var=\"password\"><value>s3cret\
                   </value></field><field var='password-verify'><value>s3cret</value></field>\
                   <field var=\"password\"/></x></command></iq>";
        let r = redact_password_fields(xml);
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("<value>carol@h</value>"), "{r}");
        assert!(
            r.contains("var=\"password\">[21 bytes redacted]</field>"),
            "{r}"
        );
        let cut = redact_password_fields("<field var=\"password\"><value>s3c");
        assert!(!cut.contains("s3c") && cut.contains("redacted"), "{cut}");
        let body = "<message><body>&lt;field var=\"password\"&gt;x</body></message>";
        assert_eq!(redact_password_fields(body), body);
        let fields = "<fields var=\"password\">kept</fields>";
        assert_eq!(redact_password_fields(fields), fields);
        assert!(matches!(
            redact_password_fields("<presence/>"),
            Cow::Borrowed(_)
        ));
    }
}
