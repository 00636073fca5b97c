//! Streaming XML framer (placeholder until implemented).
use super::Element;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attrs: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    pub attrs: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Open(StreamHeader),
    Stanza(Element),
    Close,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlError {
    NotWellFormed(String),
}

pub struct Framer;
