//! A PEP node's configuration (XEP-0060 §16.4 `pubsub#node_config`, the subset XEP-0163
//! §4.1 and XEP-0223 need): the form an owner reads and submits (§8.2), the defaults
//! (§8.3), and `publish-options` preconditions (§7.1.5). Pure: no storage, no sockets.

use crate::features::forms::{Field, Form, FormType, Submitted};

/// The configuration form's `FORM_TYPE`.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// The `publish-options` form's `FORM_TYPE` (§7.1.5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Who may read a node's items and subscribe to it (§4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone (XEP-0384's OMEMO device lists and bundles).
    Open,
    /// Contacts with a presence subscription to the owner (XEP-0163 §4.1's default).
    Presence,
    /// The owner and those it made members or publishers (XEP-0223 private storage).
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// When the last published item is sent to a new subscriber (§16.4
/// `pubsub#send_last_published_item`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    /// XEP-0163 §4.3.3's default: also when a contact's available presence arrives.
    OnSubAndPresence,
}

impl SendLast {
    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// `pubsub#max_items`: a number, or `max` (the most the service allows, XEP-0060 §16.4,
/// used by XEP-0402 bookmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxItems {
    Count(u32),
    Max,
}

impl MaxItems {
    /// The number of items kept, given the service's limit.
    pub fn effective(self, limit: u32) -> u32 {
        match self {
            MaxItems::Count(n) => n.min(limit),
            MaxItems::Max => limit,
        }
    }

    fn as_string(self) -> String {
        match self {
            MaxItems::Count(n) => n.to_string(),
            MaxItems::Max => "max".to_owned(),
        }
    }
}

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub title: String,
    pub access: AccessModel,
    pub persist_items: bool,
    pub max_items: MaxItems,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub send_last: SendLast,
    /// `pubsub#notification_type`: `headline` (the default here, as for Prosody's PEP) or
    /// `normal`.
    pub headline: bool,
}

impl Default for NodeConfig {
    /// XEP-0163 §4.1's node defaults: presence access, persistent, the last item kept,
    /// notifications with payloads, the last item sent on subscription and presence.
    fn default() -> NodeConfig {
        NodeConfig {
            title: String::new(),
            access: AccessModel::Presence,
            persist_items: true,
            max_items: MaxItems::Count(1),
            deliver_notifications: true,
            deliver_payloads: true,
            notify_retract: true,
            notify_delete: true,
            send_last: SendLast::OnSubAndPresence,
            headline: true,
        }
    }
}

/// Why a submitted configuration or precondition was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A field this service does not know or a value it does not support (§8.2.5:
    /// `not-acceptable`).
    Unsupported(String),
    /// A precondition differs from the node's configuration (§7.1.5: `conflict` with
    /// `precondition-not-met`).
    PreconditionNotMet(String),
}

fn bool_value(s: &str) -> Option<bool> {
    match s {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

impl NodeConfig {
    /// Each option as (var, value), in the form's order.
    fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("pubsub#title", self.title.clone()),
            ("pubsub#access_model", self.access.as_str().to_owned()),
            (
                "pubsub#persist_items",
                bool_str(self.persist_items).to_owned(),
            ),
            ("pubsub#max_items", self.max_items.as_string()),
            (
                "pubsub#deliver_notifications",
                bool_str(self.deliver_notifications).to_owned(),
            ),
            (
                "pubsub#deliver_payloads",
                bool_str(self.deliver_payloads).to_owned(),
            ),
            (
                "pubsub#notify_retract",
                bool_str(self.notify_retract).to_owned(),
            ),
            (
                "pubsub#notify_delete",
                bool_str(self.notify_delete).to_owned(),
            ),
            (
                "pubsub#send_last_published_item",
                self.send_last.as_str().to_owned(),
            ),
            (
                "pubsub#notification_type",
                if self.headline { "headline" } else { "normal" }.to_owned(),
            ),
        ]
    }

    /// Sets one option from its submitted value; `limit` bounds `max_items`.
    fn set(&mut self, var: &str, value: &str, limit: u32) -> Result<(), ConfigError> {
        let bad = || ConfigError::Unsupported(format!("{var}={value}"));
        match var {
            "pubsub#title" => self.title = value.chars().take(256).collect(),
            "pubsub#access_model" => self.access = AccessModel::parse(value).ok_or_else(bad)?,
            "pubsub#persist_items" => self.persist_items = bool_value(value).ok_or_else(bad)?,
            "pubsub#max_items" => {
                self.max_items = match value {
                    "max" => MaxItems::Max,
                    n => match n.parse::<u32>() {
                        Ok(n) if n >= 1 && n <= limit => MaxItems::Count(n),
                        _ => return Err(bad()),
                    },
                }
            }
            "pubsub#deliver_notifications" => {
                self.deliver_notifications = bool_value(value).ok_or_else(bad)?
            }
            "pubsub#deliver_payloads" => {
                self.deliver_payloads = bool_value(value).ok_or_else(bad)?
            }
            "pubsub#notify_retract" => self.notify_retract = bool_value(value).ok_or_else(bad)?,
            "pubsub#notify_delete" => self.notify_delete = bool_value(value).ok_or_else(bad)?,
            "pubsub#send_last_published_item" => {
                self.send_last = SendLast::parse(value).ok_or_else(bad)?
            }
            "pubsub#notification_type" => {
                self.headline = match value {
                    "headline" => true,
                    "normal" => false,
                    _ => return Err(bad()),
                }
            }
            // Accepted and left as they are: only the owner publishes in PEP
            // (XEP-0163 §4.2), and notifications never carry a subscription id here.
            "pubsub#publish_model" if value == "publishers" || value == "owner" => {}
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Applies a submitted §8.2.4 configuration form (fields not given keep their value).
    /// All or nothing: an unsupported field leaves `self` untouched.
    pub fn apply(&mut self, form: &Submitted, limit: u32) -> Result<(), ConfigError> {
        let mut next = self.clone();
        for var in form.vars() {
            if var == "FORM_TYPE" {
                continue;
            }
            let value = form.value(var).unwrap_or_default();
            next.set(var, value, limit)?;
        }
        *self = next;
        Ok(())
    }

    /// §7.1.5: whether this configuration meets the `publish-options` preconditions.
    /// `pubsub#max_items=max` is met by `max`; numbers compare as numbers.
    pub fn check(&self, preconditions: &Submitted, limit: u32) -> Result<(), ConfigError> {
        for var in preconditions.vars() {
            if var == "FORM_TYPE" {
                continue;
            }
            let wanted = preconditions.value(var).unwrap_or_default();
            let mut probe = self.clone();
            probe
                .set(var, wanted, limit)
                .map_err(|_| ConfigError::PreconditionNotMet(format!("{var}={wanted}")))?;
            if probe != *self {
                return Err(ConfigError::PreconditionNotMet(format!("{var}={wanted}")));
            }
        }
        Ok(())
    }

    /// The §8.2 form (`form` for configuring, with options; the same values for §8.3's
    /// defaults).
    pub fn to_form(&self, limit: u32) -> Form {
        let mut form = Form::new(FormType::Form, NODE_CONFIG);
        for (var, value) in self.options() {
            let field = match var {
                "pubsub#title" => Field::new(var, "text-single").label("A name for the node"),
                "pubsub#access_model" => Field::new(var, "list-single")
                    .label("Who may subscribe and retrieve items")
                    .option("Anyone", "open")
                    .option("Contacts with a presence subscription", "presence")
                    .option("Only those on the whitelist", "whitelist"),
                "pubsub#max_items" => Field::new(var, "text-single")
                    .label(format!("Items to keep (1 to {limit}, or max)")),
                "pubsub#send_last_published_item" => Field::new(var, "list-single")
                    .label("When to send the last published item")
                    .option("Never", "never")
                    .option("When a subscription is made", "on_sub")
                    .option(
                        "On subscription and when a contact comes online",
                        "on_sub_and_presence",
                    ),
                "pubsub#notification_type" => Field::new(var, "list-single")
                    .label("Message type of notifications")
                    .option("Headline", "headline")
                    .option("Normal", "normal"),
                "pubsub#persist_items" => Field::new(var, "boolean").label("Keep items in storage"),
                "pubsub#deliver_notifications" => {
                    Field::new(var, "boolean").label("Deliver event notifications")
                }
                "pubsub#deliver_payloads" => {
                    Field::new(var, "boolean").label("Deliver payloads with notifications")
                }
                "pubsub#notify_retract" => {
                    Field::new(var, "boolean").label("Notify when items are removed")
                }
                _ => Field::new(var, "boolean").label("Notify when the node is deleted"),
            };
            form = form.field(field.value(value));
        }
        form
    }

    /// The stored form: `var=value` lines of what differs from the defaults.
    pub fn to_stored(&self) -> String {
        let defaults = NodeConfig::default().options();
        let mut out = String::new();
        for ((var, value), (_, default)) in self.options().into_iter().zip(defaults) {
            if value != default {
                out.push_str(var);
                out.push('=');
                // A title is one line.
                out.push_str(&value.replace('\n', " "));
                out.push('\n');
            }
        }
        out
    }

    /// Reads [`NodeConfig::to_stored`]'s lines; what it cannot read keeps its default
    /// (the file is ours, but an older or newer hearth may have written it).
    pub fn from_stored(s: &str) -> NodeConfig {
        let mut c = NodeConfig::default();
        for line in s.lines() {
            if let Some((var, value)) = line.split_once('=') {
                let _ = c.set(var, value, u32::MAX);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;

    fn submitted(fields: &[(&str, &str)]) -> Submitted {
        let mut x = Element::new("x", "jabber:x:data").with_attr("type", "submit");
        for (var, value) in fields {
            x.push_child(
                Element::new("field", "jabber:x:data")
                    .with_attr("var", *var)
                    .with_child(Element::new("value", "jabber:x:data").with_text(*value)),
            );
        }
        Submitted::parse(&x).unwrap()
    }

    #[test]
    fn defaults_are_xep_0163s() {
        let c = NodeConfig::default();
        assert_eq!(c.access, AccessModel::Presence);
        assert!(c.persist_items);
        assert_eq!(c.max_items.effective(256), 1);
        assert_eq!(c.to_stored(), "");
        assert_eq!(NodeConfig::from_stored(""), c);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut c = NodeConfig::default();
        c.apply(
            &submitted(&[
                ("FORM_TYPE", NODE_CONFIG),
                ("pubsub#access_model", "whitelist"),
                ("pubsub#max_items", "max"),
                ("pubsub#title", "my\nbookmarks"),
                ("pubsub#send_last_published_item", "never"),
            ]),
            256,
        )
        .unwrap();
        let back = NodeConfig::from_stored(&c.to_stored());
        assert_eq!(back.access, AccessModel::Whitelist);
        assert_eq!(back.max_items, MaxItems::Max);
        assert_eq!(back.title, "my bookmarks");
        assert_eq!(back.send_last, SendLast::Never);
    }

    #[test]
    fn an_unsupported_field_or_value_changes_nothing() {
        let mut c = NodeConfig::default();
        let e = c
            .apply(
                &submitted(&[
                    ("pubsub#access_model", "open"),
                    ("pubsub#access_model2", "x"),
                ]),
                256,
            )
            .unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported(_)));
        assert_eq!(c, NodeConfig::default());
        for (var, value) in [
            ("pubsub#access_model", "roster"),
            ("pubsub#max_items", "0"),
            ("pubsub#max_items", "257"),
            ("pubsub#max_items", "many"),
            ("pubsub#persist_items", "yes"),
        ] {
            assert!(c.apply(&submitted(&[(var, value)]), 256).is_err(), "{var}");
        }
    }

    #[test]
    fn preconditions_compare_with_the_node() {
        let mut c = NodeConfig {
            access: AccessModel::Open,
            ..NodeConfig::default()
        };
        let open = submitted(&[
            ("FORM_TYPE", PUBLISH_OPTIONS),
            ("pubsub#access_model", "open"),
        ]);
        assert_eq!(c.check(&open, 256), Ok(()));
        let presence = submitted(&[("pubsub#access_model", "presence")]);
        assert!(matches!(
            c.check(&presence, 256),
            Err(ConfigError::PreconditionNotMet(_))
        ));
        // `max` is met only by `max`; a number by the same number.
        c.max_items = MaxItems::Max;
        assert_eq!(
            c.check(&submitted(&[("pubsub#max_items", "max")]), 256),
            Ok(())
        );
        assert!(
            c.check(&submitted(&[("pubsub#max_items", "256")]), 256)
                .is_err()
        );
        // Unknown fields are not met (never silently ignored).
        assert!(
            c.check(&submitted(&[("pubsub#whatever", "1")]), 256)
                .is_err()
        );
        // "true" and "1" are the same boolean.
        assert_eq!(
            c.check(&submitted(&[("pubsub#persist_items", "true")]), 256),
            Ok(())
        );
    }

    #[test]
    fn the_form_lists_every_option_with_its_value() {
        let form = NodeConfig::default().to_form(256).to_element();
        let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
        assert!(vars.contains(&"FORM_TYPE"));
        assert!(vars.contains(&"pubsub#access_model"));
        assert!(vars.contains(&"pubsub#max_items"));
    }
}
