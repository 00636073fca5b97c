//! XEP-0077's rules without I/O: what a `jabber:iq:register` payload asks, the forms the
//! server answers with, and which names a stranger may take.

use crate::config::RegistrationPolicy;
use crate::jid;
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::Element;

use super::{NS_DATA, NS_PARS, NS_REGISTER};

/// Names nobody may register in band (`hearth user add` still can): the server's own
/// (`hearth`, `xmpp`), the role mailboxes of RFC 2142 and XEP-0157 that people trust
/// (`admin`, `postmaster`, `abuse`, …) and the system's (`root`).
pub const RESERVED: &[&str] = &[
    "abuse",
    "admin",
    "administrator",
    "hearth",
    "hostmaster",
    "postmaster",
    "root",
    "security",
    "support",
    "webmaster",
    "xmpp",
];

/// What a `jabber:iq:register` set asks (XEP-0077 §3).
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// §3.1 (before login) or §3.3 (after): a username and a password, and an invitation
    /// token when one came along (XEP-0401 `<preauth/>` or the form's `token` field).
    Account {
        username: String,
        password: String,
        token: Option<String>,
    },
    /// §3.2: `<remove/>`.
    Remove,
}

/// Never shows the password or the token (logs, test failures).
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Account {
                username, token, ..
            } => f
                .debug_struct("Account")
                .field("username", username)
                .field("token", &token.as_ref().map(|_| "…"))
                .finish_non_exhaustive(),
            Request::Remove => f.write_str("Remove"),
        }
    }
}

fn not_acceptable(text: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::NotAcceptable).with_text(text)
}

/// The value of a submitted XEP-0004 form field (`<x type='submit'>`).
fn form_value(query: &Element, var: &str) -> Option<String> {
    query
        .children()
        .filter(|x| x.is("x", NS_DATA))
        .flat_map(|x| x.children())
        .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", NS_DATA))
        .map(Element::text)
}

/// Reads an iq set's `<query xmlns='jabber:iq:register'/>`: the legacy fields (§3.1
/// `<username/>`, `<password/>`) or a submitted data form (§4) with the same vars, and
/// a token from XEP-0401's `<preauth token='…'/>` or the form's `token` field. Missing
/// fields are `not-acceptable` (§3.1: "required information not provided").
pub fn parse_set(query: &Element) -> Result<Request, StanzaError> {
    if query.has_child("remove", NS_REGISTER) {
        return Ok(Request::Remove);
    }
    let field = |name: &str| {
        query
            .get_child(name, NS_REGISTER)
            .map(Element::text)
            .or_else(|| form_value(query, name))
            .filter(|v| !v.is_empty())
    };
    let username = field("username").ok_or_else(|| not_acceptable("a username is needed"))?;
    let password = field("password").ok_or_else(|| not_acceptable("a password is needed"))?;
    let token = query
        .get_child("preauth", NS_PARS)
        .and_then(|p| p.attr("token"))
        .map(str::to_owned)
        .or_else(|| form_value(query, "token"))
        .filter(|t| !t.is_empty());
    Ok(Request::Account {
        username,
        password,
        token,
    })
}

/// A name a stranger asked for, as the account's localpart: normalized as `hearth user
/// add` does (RFC 7622 §3.3, PRECIS UsernameCaseMapped, at most 1023 bytes), and not one
/// of [`RESERVED`]. Refusals are `not-acceptable` (XEP-0077 §3.1) with the reason.
pub fn check_username(name: &str) -> Result<String, StanzaError> {
    let user = jid::normalize_localpart(name)
        .map_err(|e| not_acceptable(&format!("this cannot be a user name: {e}")))?;
    if RESERVED.contains(&user.as_str()) {
        return Err(not_acceptable("this user name is reserved"));
    }
    Ok(user)
}

/// The registration form for someone not logged in (XEP-0077 §3.1 example 2): the
/// legacy fields and the same as a data form (§4, FORM_TYPE `jabber:iq:register`), with a
/// `token` field when an invitation is needed.
pub fn form(policy: RegistrationPolicy) -> Element {
    let instructions = match policy {
        RegistrationPolicy::Invite => {
            "Choose a user name and a password. This server registers by invitation: \
             give the invitation's token too."
        }
        _ => "Choose a user name and a password.",
    };
    let field = |var: &str, ty: &str, label: &str| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_attr("type", ty)
            .with_attr("label", label)
            .with_child(Element::new("required", NS_DATA))
    };
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", NS_DATA).with_text("Create an account"))
        .with_child(Element::new("instructions", NS_DATA).with_text(instructions))
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", NS_DATA).with_text(NS_REGISTER)),
        )
        .with_child(field("username", "text-single", "User name"))
        .with_child(field("password", "text-private", "Password"));
    if policy == RegistrationPolicy::Invite {
        x.push_child(field("token", "text-single", "Invitation token"));
    }
    Element::new("query", NS_REGISTER)
        .with_child(Element::new("instructions", NS_REGISTER).with_text(instructions))
        .with_child(Element::new("username", NS_REGISTER))
        .with_child(Element::new("password", NS_REGISTER))
        .with_child(x)
}

/// The answer to a logged-in user's get (§3.1: "already registered"): `<registered/>`
/// and the username, so a client can offer a password change or removal.
pub fn registered(user: &str) -> Element {
    Element::new("query", NS_REGISTER)
        .with_child(Element::new("registered", NS_REGISTER))
        .with_child(Element::new("username", NS_REGISTER).with_text(user))
        .with_child(Element::new("password", NS_REGISTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::im::tests::parse;

    fn query(inner: &str) -> Element {
        let iq = parse(&format!(
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'>{inner}</query></iq>"
        ));
        iq.get_child("query", NS_REGISTER).unwrap().clone()
    }

    #[test]
    fn legacy_fields_form_and_tokens() {
        let r = parse_set(&query(
            "<username>Alice</username><password>pw 1</password>\
             <preauth xmlns='urn:xmpp:pars:0' token='t0k'/>",
        ))
        .unwrap();
        assert_eq!(
            r,
            Request::Account {
                username: "Alice".into(),
                password: "pw 1".into(),
                token: Some("t0k".into())
            }
        );
        // Shown without the secrets.
        let shown = format!("{r:?}");
        assert!(!shown.contains("pw 1") && !shown.contains("t0k"), "{shown}");

        let r = parse_set(&query(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>jabber:iq:register</value></field>\
             <field var='username'><value>bob</value></field>\
             <field var='password'><value>secret</value></field>\
             <field var='token'><value>abc</value></field></x>",
        ))
        .unwrap();
        assert_eq!(
            r,
            Request::Account {
                username: "bob".into(),
                password: "secret".into(),
                token: Some("abc".into())
            }
        );
        assert_eq!(parse_set(&query("<remove/>")).unwrap(), Request::Remove);
        for missing in [
            "",
            "<username>a</username>",
            "<password>p</password>",
            "<username/><password>p</password>",
        ] {
            assert_eq!(
                parse_set(&query(missing)).unwrap_err().condition,
                StanzaCondition::NotAcceptable,
                "{missing}"
            );
        }
    }

    #[test]
    fn names_are_normalized_and_reserved_ones_refused() {
        assert_eq!(check_username("Alice").unwrap(), "alice");
        for bad in ["", "a b", "a@b", "a/b", "a:b", &"x".repeat(1024)] {
            let e = check_username(bad).unwrap_err();
            assert_eq!(e.condition, StanzaCondition::NotAcceptable, "{bad:?}");
        }
        for reserved in [
            "admin",
            "ROOT",
            "Postmaster",
            "hostmaster",
            "hearth",
            "xmpp",
        ] {
            let e = check_username(reserved).unwrap_err();
            assert_eq!(e.condition, StanzaCondition::NotAcceptable, "{reserved}");
            assert_eq!(e.text.as_deref(), Some("this user name is reserved"));
        }
    }

    #[test]
    fn the_form_asks_for_a_token_only_by_invitation() {
        let open = form(RegistrationPolicy::Open).to_xml_in(crate::ns::CLIENT);
        assert!(open.contains("<username/><password/>"), "{open}");
        assert!(open.contains("var=\"FORM_TYPE\""), "{open}");
        assert!(!open.contains("token"), "{open}");
        let invite = form(RegistrationPolicy::Invite).to_xml_in(crate::ns::CLIENT);
        assert!(invite.contains("var=\"token\""), "{invite}");
        let reg = registered("alice").to_xml_in(crate::ns::CLIENT);
        assert!(
            reg.contains("<registered/><username>alice</username>"),
            "{reg}"
        );
    }
}
