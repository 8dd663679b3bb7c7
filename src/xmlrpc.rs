//! The XML-RPC codec: request bytes to a [`Call`], and a [`Value`] or a
//! [`Fault`] back to response bytes. Pure: no I/O, no policy.
//!
//! Requests are parsed with the `xml` crate. Every type of the XML-RPC spec
//! is accepted, plus `<nil/>`; a `<value>` without a type element is a
//! string. Document type declarations are refused outright: XML-RPC has no
//! use for them, and refusing them rules out entity expansion bombs and
//! external entities. Nesting is limited to [`MAX_DEPTH`] elements.

use std::fmt::Write as _;

use xml::reader::{EventReader, ParserConfig, XmlEvent};

/// The deepest element nesting a request may have.
pub const MAX_DEPTH: usize = 64;

/// Fault codes of the "specification for fault code interoperability", and
/// gocept.lockd's code for refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Refused = 1,
    ParseError = -32700,
    InvalidRequest = -32600,
    MethodNotFound = -32601,
    InvalidParams = -32602,
    Internal = -32603,
    Application = -32500,
}

/// An XML-RPC fault: a code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub code: FaultCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }

    /// The fault as a value, as `system.multicall` returns it in place.
    pub fn to_value(&self) -> Value {
        Value::Struct(vec![
            ("faultCode".to_owned(), Value::Int(self.code as i32)),
            ("faultString".to_owned(), Value::Str(self.message.clone())),
        ])
    }
}

/// An XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i32),
    Bool(bool),
    Str(String),
    Double(f64),
    /// `dateTime.iso8601`, kept as the text it was sent as.
    DateTime(String),
    Base64(Vec<u8>),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
    Nil,
}

impl Value {
    /// The XML-RPC type name, for messages and signatures.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Bool(_) => "boolean",
            Value::Str(_) => "string",
            Value::Double(_) => "double",
            Value::DateTime(_) => "dateTime.iso8601",
            Value::Base64(_) => "base64",
            Value::Struct(_) => "struct",
            Value::Array(_) => "array",
            Value::Nil => "nil",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A struct member by name.
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A method call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// A parsed element: its local name, child elements and text.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn only_whitespace(&self) -> bool {
        self.text.chars().all(|c| c.is_ascii_whitespace())
    }
}

fn parse_error(message: impl Into<String>) -> Fault {
    Fault::new(FaultCode::ParseError, message)
}

fn invalid(message: impl Into<String>) -> Fault {
    Fault::new(FaultCode::InvalidRequest, message)
}

/// Parse a request body into a call.
pub fn parse_call(body: &[u8]) -> Result<Call, Fault> {
    let root = parse_tree(body)?;
    if root.name != "methodCall" {
        return Err(invalid(format!(
            "expected a <methodCall> element, got <{}>",
            root.name
        )));
    }
    container(&root)?;
    let mut method = None;
    let mut params = Vec::new();
    for child in &root.children {
        match child.name.as_str() {
            "methodName" if method.is_none() => {
                if !child.children.is_empty() {
                    return Err(invalid("<methodName> must hold only text"));
                }
                method = Some(child.text.trim().to_owned());
            }
            "params" => {
                container(child)?;
                for param in &child.children {
                    if param.name != "param" {
                        return Err(invalid(format!(
                            "expected <param> in <params>, got <{}>",
                            param.name
                        )));
                    }
                    params.push(single_value(param)?);
                }
            }
            other => return Err(invalid(format!("unexpected <{other}> in <methodCall>"))),
        }
    }
    match method {
        Some(method) if !method.is_empty() => Ok(Call { method, params }),
        _ => Err(invalid("the <methodCall> has no <methodName>")),
    }
}

/// Check that an element holds only elements and white space.
fn container(element: &Element) -> Result<(), Fault> {
    if element.only_whitespace() {
        Ok(())
    } else {
        Err(invalid(format!("<{}> must not contain text", element.name)))
    }
}

/// The one `<value>` inside `<param>` or a struct `<member>`'s slot.
fn single_value(parent: &Element) -> Result<Value, Fault> {
    container(parent)?;
    match parent.children.as_slice() {
        [value] if value.name == "value" => parse_value(value),
        _ => Err(invalid(format!(
            "<{}> must hold exactly one <value>",
            parent.name
        ))),
    }
}

fn parse_value(value: &Element) -> Result<Value, Fault> {
    let typed = match value.children.as_slice() {
        [] => return Ok(Value::Str(value.text.clone())),
        [typed] if value.only_whitespace() => typed,
        _ => return Err(invalid("a <value> holds either text or one type element")),
    };
    match typed.name.as_str() {
        "array" => parse_array(typed),
        "struct" => parse_struct(typed),
        "nil" => {
            if typed.children.is_empty() && typed.only_whitespace() {
                Ok(Value::Nil)
            } else {
                Err(invalid("<nil/> must be empty"))
            }
        }
        _ => parse_scalar(typed),
    }
}

/// A type element that holds text: string, int, boolean and so on.
fn parse_scalar(typed: &Element) -> Result<Value, Fault> {
    if !typed.children.is_empty() {
        return match typed.name.as_str() {
            known @ ("string" | "int" | "i4" | "boolean" | "double" | "dateTime.iso8601"
            | "base64") => Err(invalid(format!("<{known}> must hold only text"))),
            other => Err(invalid(format!("unknown value type <{other}>"))),
        };
    }
    let text = &typed.text;
    let bad = |what: &str, text: &str| {
        invalid(format!(
            "<{what}> holds {text:?}, which is not a valid {what}"
        ))
    };
    match typed.name.as_str() {
        "string" => Ok(Value::Str(text.clone())),
        "int" | "i4" => text
            .trim()
            .parse()
            .map(Value::Int)
            .map_err(|_| bad(&typed.name, text)),
        "boolean" => match text.trim() {
            "1" => Ok(Value::Bool(true)),
            "0" => Ok(Value::Bool(false)),
            other => Err(bad("boolean", other)),
        },
        "double" => text
            .trim()
            .parse()
            .map(Value::Double)
            .map_err(|_| bad("double", text)),
        "dateTime.iso8601" => Ok(Value::DateTime(text.trim().to_owned())),
        "base64" => base64_decode(text)
            .map(Value::Base64)
            .ok_or_else(|| bad("base64", text)),
        other => Err(invalid(format!("unknown value type <{other}>"))),
    }
}

fn parse_array(array: &Element) -> Result<Value, Fault> {
    container(array)?;
    let [data] = array.children.as_slice() else {
        return Err(invalid("<array> must hold exactly one <data>"));
    };
    if data.name != "data" {
        return Err(invalid(format!(
            "expected <data> in <array>, got <{}>",
            data.name
        )));
    }
    container(data)?;
    data.children
        .iter()
        .map(|v| {
            if v.name == "value" {
                parse_value(v)
            } else {
                Err(invalid(format!(
                    "expected <value> in <data>, got <{}>",
                    v.name
                )))
            }
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

fn parse_struct(element: &Element) -> Result<Value, Fault> {
    container(element)?;
    let mut members = Vec::with_capacity(element.children.len());
    for member in &element.children {
        if member.name != "member" {
            return Err(invalid(format!(
                "expected <member> in <struct>, got <{}>",
                member.name
            )));
        }
        container(member)?;
        let (mut name, mut value) = (None, None);
        for part in &member.children {
            match part.name.as_str() {
                "name" if name.is_none() && part.children.is_empty() => {
                    name = Some(part.text.clone())
                }
                "value" if value.is_none() => value = Some(parse_value(part)?),
                other => return Err(invalid(format!("unexpected <{other}> in <member>"))),
            }
        }
        match (name, value) {
            (Some(name), Some(value)) => members.push((name, value)),
            _ => return Err(invalid("a <member> needs one <name> and one <value>")),
        }
    }
    Ok(Value::Struct(members))
}

/// Parse XML into an element tree, refusing DTDs and deep nesting.
fn parse_tree(body: &[u8]) -> Result<Element, Fault> {
    let mut config = ParserConfig::new()
        .cdata_to_characters(true)
        .whitespace_to_characters(true)
        .coalesce_characters(true)
        .ignore_comments(true);
    config.max_entity_expansion_length = 0;
    config.max_entity_expansion_depth = 0;
    config.max_name_length = 256;
    config.max_attributes = 64;
    config.allow_multiple_root_elements = false;
    let reader = EventReader::new_with_config(body, config);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    for event in reader {
        let event =
            event.map_err(|e| parse_error(format!("the request is not well-formed XML: {e}")))?;
        match event {
            XmlEvent::Doctype { .. } => {
                return Err(parse_error(
                    "document type declarations are not accepted in XML-RPC requests",
                ));
            }
            XmlEvent::StartElement { name, .. } => {
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(format!(
                        "the request nests elements deeper than {MAX_DEPTH} levels"
                    )));
                }
                stack.push(Element {
                    name: name.local_name,
                    ..Element::default()
                });
            }
            XmlEvent::EndElement { .. } => {
                let Some(done) = stack.pop() else {
                    return Err(parse_error("unbalanced end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    // Read on: whatever follows must be well-formed too,
                    // and there must be no second root element.
                    None => root = Some(done),
                }
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) | XmlEvent::Whitespace(text) => {
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&text);
                }
            }
            XmlEvent::EndDocument => break,
            XmlEvent::StartDocument { .. }
            | XmlEvent::ProcessingInstruction { .. }
            | XmlEvent::Comment(_) => {}
        }
    }
    root.ok_or_else(|| parse_error("the request has no root element"))
}

const XML_HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// A successful response carrying `value`.
pub fn write_response(value: &Value) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(XML_HEAD);
    out.push_str("<methodResponse>\n<params>\n<param>\n");
    write_value(&mut out, value);
    out.push_str("\n</param>\n</params>\n</methodResponse>\n");
    out.into_bytes()
}

/// A fault response.
pub fn write_fault(fault: &Fault) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(XML_HEAD);
    out.push_str("<methodResponse>\n<fault>\n");
    write_value(&mut out, &fault.to_value());
    out.push_str("\n</fault>\n</methodResponse>\n");
    out.into_bytes()
}

/// A method call as Python's `xmlrpc.client` writes it: the elements of
/// [`write_call`] after Python's XML declaration. For strings without
/// control characters (which Python sends unchanged and this codec does
/// not) the bytes are Python's; the benchmark and the wire tests send it.
pub fn write_call_as_python(call: &Call) -> Vec<u8> {
    let mut out = b"<?xml version='1.0'?>\n".to_vec();
    let ours = write_call(call);
    out.extend_from_slice(ours.strip_prefix(XML_HEAD.as_bytes()).unwrap_or(&ours));
    out
}

/// A method call, for clients.
pub fn write_call(call: &Call) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push_str(XML_HEAD);
    out.push_str("<methodCall>\n<methodName>");
    escape_into(&mut out, &call.method);
    out.push_str("</methodName>\n<params>\n");
    for param in &call.params {
        out.push_str("<param>\n");
        write_value(&mut out, param);
        out.push_str("\n</param>\n");
    }
    out.push_str("</params>\n</methodCall>\n");
    out.into_bytes()
}

/// What a response holds: a value or a fault.
pub fn parse_response(body: &[u8]) -> Result<Result<Value, Fault>, Fault> {
    let root = parse_tree(body)?;
    if root.name != "methodResponse" {
        return Err(invalid(format!(
            "expected a <methodResponse> element, got <{}>",
            root.name
        )));
    }
    container(&root)?;
    let [child] = root.children.as_slice() else {
        return Err(invalid("a <methodResponse> holds one <params> or <fault>"));
    };
    match child.name.as_str() {
        "params" => {
            container(child)?;
            match child.children.as_slice() {
                [param] if param.name == "param" => Ok(Ok(single_value(param)?)),
                _ => Err(invalid("a response's <params> holds exactly one <param>")),
            }
        }
        "fault" => {
            let value = single_value(child)?;
            let code = match value.member("faultCode") {
                Some(Value::Int(code)) => *code,
                _ => return Err(invalid("a fault needs an int faultCode")),
            };
            let message = value
                .member("faultString")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let code = [
                FaultCode::Refused,
                FaultCode::ParseError,
                FaultCode::InvalidRequest,
                FaultCode::MethodNotFound,
                FaultCode::InvalidParams,
                FaultCode::Internal,
            ]
            .into_iter()
            .find(|c| *c as i32 == code)
            .unwrap_or(FaultCode::Application);
            Ok(Err(Fault::new(code, message)))
        }
        other => Err(invalid(format!("unexpected <{other}> in <methodResponse>"))),
    }
}

fn write_value(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Int(i) => {
            let _ = write!(out, "<int>{i}</int>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        Value::Str(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Double(d) => {
            let _ = write!(out, "<double>{d:?}</double>");
        }
        Value::DateTime(t) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, t);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(bytes) => {
            out.push_str("<base64>");
            out.push_str(&base64_encode(bytes));
            out.push_str("</base64>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>\n");
            for (name, value) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_value(out, value);
                out.push_str("</member>\n");
            }
            out.push_str("</struct>");
        }
        Value::Array(values) => {
            out.push_str("<array><data>\n");
            for value in values {
                write_value(out, value);
                out.push('\n');
            }
            out.push_str("</data></array>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Escape text for XML character data. Line breaks and tabs become character
/// references so they survive attribute-value normalisation and CR/LF
/// folding; characters XML 1.0 cannot carry become U+FFFD.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = digits
        .strip_suffix(b"==")
        .or_else(|| digits.strip_suffix(b"="))
        .unwrap_or(&digits);
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in body {
        let v = BASE64.iter().position(|&c| c == b)?;
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Prng;

    fn call(xml: &str) -> Call {
        parse_call(xml.as_bytes()).unwrap()
    }

    fn lock_call(a: &str, b: &str) -> Call {
        Call {
            method: "lock".into(),
            params: vec![Value::Str(a.into()), Value::Str(b.into())],
        }
    }

    #[test]
    fn python_request() {
        let xml = "<?xml version='1.0'?>\n<methodCall>\n<methodName>lock</methodName>\n<params>\n<param>\n<value><string>resource1</string></value>\n</param>\n<param>\n<value><string>client1</string></value>\n</param>\n</params>\n</methodCall>\n";
        assert_eq!(call(xml), lock_call("resource1", "client1"));
    }

    #[test]
    fn untyped_values_declarations_cdata_references() {
        let xml = "<methodCall><methodName>lock</methodName><params><param><value>r1</value></param><param><value><![CDATA[c<1>]]></value></param></params></methodCall>";
        assert_eq!(call(xml), lock_call("r1", "c<1>"));
        let xml = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><methodCall><methodName>lock</methodName><params><param><value>caf&#233; &amp; co</value></param><param><value><string> spaced </string></value></param></params></methodCall>";
        assert_eq!(call(xml), lock_call("café & co", " spaced "));
    }

    #[test]
    fn whitespace_between_elements() {
        let xml = "  <methodCall>\n\t<methodName> lock </methodName>\r\n <params> <param> <value> <string>a</string> </value> </param>\n<param><value>b</value></param></params> </methodCall> ";
        assert_eq!(call(xml), lock_call("a", "b"));
    }

    #[test]
    fn no_params() {
        assert_eq!(
            call("<methodCall><methodName>locks</methodName></methodCall>").params,
            vec![]
        );
        assert_eq!(
            call("<methodCall><methodName>locks</methodName><params/></methodCall>").params,
            vec![]
        );
    }

    #[test]
    fn every_type() {
        let xml = "<methodCall><methodName>m</methodName><params>\
            <param><value><int>-7</int></value></param>\
            <param><value><i4>42</i4></value></param>\
            <param><value><boolean>1</boolean></value></param>\
            <param><value><double>2.5</double></value></param>\
            <param><value><dateTime.iso8601>20261129T15:04:05</dateTime.iso8601></value></param>\
            <param><value><base64>aGVsbG8=</base64></value></param>\
            <param><value><struct><member><name>k</name><value><int>1</int></value></member></struct></value></param>\
            <param><value><array><data><value>x</value><value><nil/></value></data></array></value></param>\
            <param><value><nil/></value></param>\
            <param><value></value></param>\
            </params></methodCall>";
        assert_eq!(
            call(xml).params,
            vec![
                Value::Int(-7),
                Value::Int(42),
                Value::Bool(true),
                Value::Double(2.5),
                Value::DateTime("20261129T15:04:05".into()),
                Value::Base64(b"hello".to_vec()),
                Value::Struct(vec![("k".into(), Value::Int(1))]),
                Value::Array(vec![Value::Str("x".into()), Value::Nil]),
                Value::Nil,
                Value::Str(String::new()),
            ]
        );
    }

    fn fault(xml: &str) -> Fault {
        parse_call(xml.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_xml_is_a_parse_error() {
        for xml in [
            "",
            "<methodCall>",
            "<methodCall><methodName>x</methodCall>",
            "not xml",
            "<a></b>",
            "<methodCall>\u{0}</methodCall>",
        ] {
            assert_eq!(fault(xml).code, FaultCode::ParseError, "{xml:?}");
        }
        assert_eq!(
            parse_call(b"<methodCall>\xff</methodCall>")
                .unwrap_err()
                .code,
            FaultCode::ParseError
        );
    }

    #[test]
    fn content_after_the_root_element_is_a_parse_error() {
        let call = "<methodCall><methodName>locks</methodName></methodCall>";
        for trailer in ["<methodCall/>", "garbage", "<a>", "</b>"] {
            let xml = format!("{call}{trailer}");
            assert_eq!(fault(&xml).code, FaultCode::ParseError, "{xml:?}");
        }
        for fine in ["", "\n", "  <!-- done -->\n", "<?pi x?>"] {
            assert_eq!(
                parse_call(format!("{call}{fine}").as_bytes()).map(|c| c.method),
                Ok("locks".to_owned())
            );
        }
    }

    #[test]
    fn wrong_structure_is_invalid_request() {
        for xml in [
            "<foo/>",
            "<methodCall/>",
            "<methodCall><methodName></methodName></methodCall>",
            "<methodCall><methodName>x</methodName><params><value>1</value></params></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><int>x</int></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><int>99999999999</int></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><boolean>yes</boolean></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value><float>1</float></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName><params><param><value>a<string>b</string></value></param></params></methodCall>",
            "<methodCall><methodName>x</methodName>junk</methodCall>",
        ] {
            assert_eq!(fault(xml).code, FaultCode::InvalidRequest, "{xml:?}");
        }
    }

    #[test]
    fn dtds_and_entities_are_refused() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><methodCall><methodName>&lol2;</methodName></methodCall>";
        assert_eq!(fault(bomb).code, FaultCode::ParseError);
        let external = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><methodCall><methodName>&xxe;</methodName></methodCall>";
        assert_eq!(fault(external).code, FaultCode::ParseError);
        assert_eq!(
            fault("<methodCall><methodName>&nope;</methodName></methodCall>").code,
            FaultCode::ParseError
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let xml = format!(
            "<methodCall><methodName>x</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(100),
            "</data></array></value>".repeat(100)
        );
        let f = fault(&xml);
        assert_eq!(f.code, FaultCode::InvalidRequest);
        assert!(f.message.contains("deeper"), "{}", f.message);
    }

    #[test]
    fn nil_response_is_what_python_expects() {
        let text = String::from_utf8(write_response(&Value::Nil)).unwrap();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodResponse>\n<params>\n<param>\n<value><nil/></value>\n</param>\n</params>\n</methodResponse>\n"
        );
    }

    #[test]
    fn fault_response_escapes_the_python_type() {
        let text = String::from_utf8(write_fault(&Fault::new(
            FaultCode::Refused,
            "<type 'exceptions.Exception'>:Resource already locked by 'a&b'",
        )))
        .unwrap();
        assert!(
            text.contains("<member><name>faultCode</name><value><int>1</int></value></member>"),
            "{text}"
        );
        assert!(
            text.contains("<string>&lt;type 'exceptions.Exception'&gt;:Resource already locked by 'a&amp;b'</string>"),
            "{text}"
        );
    }

    #[test]
    fn values_round_trip_through_the_writer() {
        let value = Value::Array(vec![
            Value::Str("a\r\nb\t<&>\u{1}".into()),
            Value::Int(i32::MIN),
            Value::Bool(false),
            Value::Double(-0.5),
            Value::DateTime("20261129T15:04:05".into()),
            Value::Base64(vec![0, 1, 2, 254, 255]),
            Value::Base64(b"ab".to_vec()),
            Value::Struct(vec![("n&m".into(), Value::Nil)]),
            Value::Array(vec![]),
        ]);
        let back = parse_response(&write_response(&value)).unwrap().unwrap();
        let mut expected = value;
        if let Value::Array(items) = &mut expected {
            items[0] = Value::Str("a\r\nb\t<&>\u{fffd}".into());
        }
        assert_eq!(back, expected);
        let fault = Fault::new(FaultCode::MethodNotFound, "no such method 'x'");
        assert_eq!(parse_response(&write_fault(&fault)).unwrap(), Err(fault));
    }

    #[test]
    fn calls_as_python_writes_them() {
        let python = "<?xml version='1.0'?>\n<methodCall>\n<methodName>lock</methodName>\n<params>\n<param>\n<value><string>resource1</string></value>\n</param>\n<param>\n<value><string>client1</string></value>\n</param>\n</params>\n</methodCall>\n";
        let ours = write_call_as_python(&lock_call("resource1", "client1"));
        assert_eq!(String::from_utf8_lossy(&ours), python);
    }

    #[test]
    fn call_round_trip() {
        let c = lock_call("a/b <c>", "node 1");
        assert_eq!(parse_call(&write_call(&c)).unwrap(), c);
    }

    #[test]
    fn base64_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(base64_decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Z!=="), None);
    }

    const SEEDS: &[&str] = &[
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>lock</methodName>\n<params>\n<param>\n<value><string>resource1</string></value>\n</param>\n<param>\n<value><string>client1</string></value>\n</param>\n</params>\n</methodCall>\n",
        "<methodCall><methodName>system.multicall</methodName><params><param><value><array><data><value><struct><member><name>methodName</name><value>lock</value></member><member><name>params</name><value><array><data><value>a</value><value>b</value></data></array></value></member></struct></value></data></array></value></param></params></methodCall>",
        "<methodCall><methodName>x</methodName><params><param><value><int>-7</int></value></param><param><value><boolean>1</boolean></value></param><param><value><double>1.5e3</double></value></param><param><value><base64>aGk=</base64></value></param><param><value><dateTime.iso8601>20261129T15:04:05</dateTime.iso8601></value></param><param><value><nil/></value></param><param><value><![CDATA[<&>]]>&amp;&#233;</value></param></params></methodCall>",
        "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value></member><member><name>faultString</name><value>x</value></member></struct></value></fault></methodResponse>",
    ];

    const SNIPPETS: &[&str] = &[
        "<",
        ">",
        "</",
        "/>",
        "&",
        "&amp;",
        "&#",
        "&#x0;",
        "&#xD800;",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?xml",
        "?>",
        "<!DOCTYPE x [<!ENTITY a 'b'>]>",
        "<value>",
        "</value>",
        "<array><data>",
        "</data></array>",
        "<struct>",
        "<member>",
        "<name>",
        "<int>",
        "<i4>",
        "<boolean>",
        "<double>",
        "<base64>",
        "<nil/>",
        "'",
        "\"",
        "=",
        " a='1'",
        "xmlns:x='u'",
        "x:",
        "\u{0}",
        "\u{FFFE}",
        "\u{10FFFF}",
        "\r\n",
        "\t",
        "99999999999",
        "NaN",
        "-0",
        "====",
    ];

    fn mutate(rng: &mut Prng, input: &mut Vec<u8>) {
        for _ in 0..1 + rng.below(2) {
            let at = rng.below(input.len() + 1);
            match rng.below(6) {
                0 if !input.is_empty() => {
                    let i = rng.below(input.len());
                    input[i] = rng.next() as u8;
                }
                1 => {
                    let snippet = SNIPPETS[rng.below(SNIPPETS.len())].as_bytes();
                    input.splice(at..at, snippet.iter().copied());
                }
                2 if at < input.len() => {
                    let end = (at + 1 + rng.below(16)).min(input.len());
                    input.drain(at..end);
                }
                3 if at < input.len() => {
                    let end = (at + 1 + rng.below(64)).min(input.len());
                    let copy = input[at..end].to_vec();
                    input.splice(at..at, copy);
                }
                4 => input.truncate(at),
                _ => input.insert(at, rng.next() as u8),
            }
        }
    }

    /// Random and mutated XML never panics the parser, and every call it
    /// accepts survives the writer unchanged. (A libFuzzer target for the
    /// same is in fuzz/; this bounded run is part of `cargo test`.)
    #[test]
    fn fuzz_style_random_and_mutated_requests() {
        let mut rng = Prng(0x0F0F_1234_5678_9ABC);
        let mut parsed = 0;
        for round in 0..20_000 {
            let mut input = if round % 10 == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec()
            };
            mutate(&mut rng, &mut input);
            let _ = parse_response(&input);
            if let Ok(call) = parse_call(&input) {
                parsed += 1;
                if !format!("{call:?}").contains("NaN") {
                    assert_eq!(
                        parse_call(&write_call(&call)).as_ref(),
                        Ok(&call),
                        "{:?}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
        assert!(parsed > 100, "too few mutants parsed: {parsed}");
    }
}
