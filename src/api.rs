//! The methods lockd serves: argument checks, dispatch to the lock core,
//! introspection and `system.multicall`. No HTTP here.

use crate::clock::Utc;
use crate::store::{self, Lock, Observed, Store};
use crate::xmlrpc::{Call, Fault, FaultCode, Value};

/// gocept.lockd's refusals were Python 2 exceptions turned into faults.
pub const PY2_EXCEPTION: &str = "<type 'exceptions.Exception'>:";

/// What a call did, for the log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub method: &'static str,
    pub resource: String,
    pub client: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Refused(String),
    Invalid(String),
    Failed(String),
}

/// The answer to a call, and the change it observed: it may be sent once
/// that change is durable.
#[derive(Debug)]
pub struct Reply {
    pub value: Result<Value, Fault>,
    pub seq: u64,
    pub events: Vec<Event>,
}

struct Method {
    name: &'static str,
    params: &'static [&'static str],
    returns: &'static str,
    help: &'static str,
}

/// Every method, sorted by name.
const METHODS: &[Method] = &[
    Method {
        name: "lock",
        params: &["resource", "client"],
        returns: "nil",
        help: "lock(resource, client): take the lock on resource for client. Returns nil; \
               faults with code 1 \"Resource already locked by 'holder'\" if anyone holds it. \
               The lock is on stable storage before the reply is sent.",
    },
    Method {
        name: "locks",
        params: &[],
        returns: "array",
        help: "locks(): every held lock as a struct {resource, locked, client, since}, sorted by resource.",
    },
    Method {
        name: "status",
        params: &["resource"],
        returns: "struct",
        help: "status(resource): a struct {resource, locked} and, when locked, client and since \
               (dateTime.iso8601, UTC, when the lock was taken).",
    },
    Method {
        name: "system.listMethods",
        params: &[],
        returns: "array",
        help: "system.listMethods(): the names of all methods, sorted.",
    },
    Method {
        name: "system.methodHelp",
        params: &["method"],
        returns: "string",
        help: "system.methodHelp(method): what the method does.",
    },
    Method {
        name: "system.methodSignature",
        params: &["method"],
        returns: "array",
        help: "system.methodSignature(method): its signatures, each [return type, parameter types...].",
    },
    Method {
        name: "system.multicall",
        params: &["calls"],
        returns: "array",
        help: "system.multicall(calls): run an array of {methodName, params} structs in order. \
               Each result comes back as a one-element array, each fault as a fault struct in its place.",
    },
    Method {
        name: "unlock",
        params: &["resource", "client"],
        returns: "nil",
        help: "unlock(resource, client): release the lock client holds on resource. Returns nil; \
               faults with code 1 \"Resource not locked\" or \"Resource locked by 'holder' cannot be unlocked by 'client'\". \
               The release is on stable storage before the reply is sent.",
    },
];

/// The names of the methods lockd serves, sorted (the metrics' labels).
pub fn method_names() -> impl Iterator<Item = &'static str> {
    METHODS.iter().map(|m| m.name)
}

fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

impl Method {
    fn param_types(&self) -> Vec<&'static str> {
        match self.name {
            "system.multicall" => vec!["array"],
            _ => vec!["string"; self.params.len()],
        }
    }

    /// "lock expects 2 string parameters (resource, client)"
    fn expectation(&self) -> String {
        match self.params {
            [] => format!("{} expects no parameters", self.name),
            [one] => format!(
                "{} expects 1 {} parameter ({one})",
                self.name,
                self.param_types()[0]
            ),
            many => format!(
                "{} expects {} {} parameters ({})",
                self.name,
                many.len(),
                self.param_types()[0],
                many.join(", ")
            ),
        }
    }

    /// The parameters as strings, or a fault that says what was expected.
    fn strings<'a>(&self, params: &'a [Value]) -> Result<Vec<&'a str>, Fault> {
        let got = if params.len() != self.params.len() {
            params.len().to_string()
        } else {
            match params.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                Some(strings) => return Ok(strings),
                None => format!(
                    "({})",
                    params
                        .iter()
                        .map(Value::type_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        Err(Fault::new(
            FaultCode::InvalidParams,
            format!("{}, got {got}", self.expectation()),
        ))
    }
}

/// Run one call against the store.
pub fn dispatch(store: &Store, call: &Call) -> Reply {
    let mut events = Vec::new();
    let (value, seq) = run(store, call, &mut events, true);
    Reply { value, seq, events }
}

fn run(
    store: &Store,
    call: &Call,
    events: &mut Vec<Event>,
    top: bool,
) -> (Result<Value, Fault>, u64) {
    let Some(method) = find(&call.method) else {
        let fault = Fault::new(
            FaultCode::MethodNotFound,
            format!(
                "no method {}; system.listMethods lists the methods lockd serves",
                shown(&call.method)
            ),
        );
        return (Err(fault), 0);
    };
    if method.name == "system.multicall" {
        return if top {
            multicall(store, method, &call.params, events)
        } else {
            (
                Err(Fault::new(
                    FaultCode::InvalidRequest,
                    "system.multicall cannot be nested",
                )),
                0,
            )
        };
    }
    let args = match method.strings(&call.params) {
        Ok(args) => args,
        Err(fault) => {
            if let (Some(resource), true) = (
                call.params.first().and_then(Value::as_str),
                matches!(method.name, "lock" | "unlock"),
            ) {
                events.push(Event {
                    method: method.name,
                    resource: resource.to_owned(),
                    client: None,
                    outcome: Outcome::Invalid(fault.message.clone()),
                });
            }
            return (Err(fault), 0);
        }
    };
    match (method.name, args.as_slice()) {
        ("lock", &[resource, client]) => change(
            method.name,
            store.lock(resource, client),
            resource,
            client,
            events,
        ),
        ("unlock", &[resource, client]) => change(
            method.name,
            store.unlock(resource, client),
            resource,
            client,
            events,
        ),
        ("status", &[resource]) => {
            let Observed { result, seq } = store.status(resource);
            let value = result
                .map(|lock| status_value(resource, lock.as_ref()))
                .map_err(fault_of);
            (value, seq)
        }
        ("locks", &[]) => {
            let Observed { result, seq } = store.locks();
            let value = result.map(|locks| {
                Value::Array(
                    locks
                        .iter()
                        .map(|l| status_value(&l.resource, Some(l)))
                        .collect(),
                )
            });
            (value.map_err(fault_of), seq)
        }
        ("system.listMethods", &[]) => (
            Ok(Value::Array(
                METHODS
                    .iter()
                    .map(|m| Value::Str(m.name.to_owned()))
                    .collect(),
            )),
            0,
        ),
        ("system.methodHelp", &[name]) => match find(name) {
            Some(m) => (Ok(Value::Str(m.help.to_owned())), 0),
            None => (
                Err(Fault::new(
                    FaultCode::InvalidParams,
                    format!("no method {}", shown(name)),
                )),
                0,
            ),
        },
        ("system.methodSignature", &[name]) => match find(name) {
            Some(m) => {
                let mut signature = vec![Value::Str(m.returns.to_owned())];
                signature.extend(
                    m.param_types()
                        .into_iter()
                        .map(|t| Value::Str(t.to_owned())),
                );
                (Ok(Value::Array(vec![Value::Array(signature)])), 0)
            }
            None => (
                Err(Fault::new(
                    FaultCode::InvalidParams,
                    format!("no method {}", shown(name)),
                )),
                0,
            ),
        },
        _ => (
            Err(Fault::new(
                FaultCode::Internal,
                format!("{} is listed but not served", method.name),
            )),
            0,
        ),
    }
}

/// A name from the network as a fault or log line shows it: quoted, and cut
/// short, so a 1 MiB method name does not come back as a 1 MiB fault.
pub fn shown(name: &str) -> String {
    const MAX: usize = 100;
    match name.char_indices().nth(MAX) {
        None => format!("{name:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &name[..end], name.len()),
    }
}

fn change(
    method: &'static str,
    observed: Observed<()>,
    resource: &str,
    client: &str,
    events: &mut Vec<Event>,
) -> (Result<Value, Fault>, u64) {
    let outcome = match &observed.result {
        Ok(()) => Outcome::Done,
        Err(store::Error::Refused(refusal)) => Outcome::Refused(refusal.to_string()),
        Err(error @ store::Error::Name(_)) => Outcome::Invalid(error.to_string()),
        Err(error @ store::Error::Io { .. }) => Outcome::Failed(error.to_string()),
    };
    events.push(Event {
        method,
        resource: resource.to_owned(),
        client: Some(client.to_owned()),
        outcome,
    });
    (
        observed.result.map(|()| Value::Nil).map_err(fault_of),
        observed.seq,
    )
}

fn fault_of(error: store::Error) -> Fault {
    match error {
        store::Error::Refused(refusal) => {
            Fault::new(FaultCode::Refused, format!("{PY2_EXCEPTION}{refusal}"))
        }
        store::Error::Name(error) => Fault::new(FaultCode::InvalidParams, error.to_string()),
        error @ store::Error::Io { .. } => Fault::new(
            FaultCode::Internal,
            format!("lock directory failure: {error}"),
        ),
    }
}

fn status_value(resource: &str, lock: Option<&Lock>) -> Value {
    let mut members = vec![
        ("resource".to_owned(), Value::Str(resource.to_owned())),
        ("locked".to_owned(), Value::Bool(lock.is_some())),
    ];
    if let Some(lock) = lock {
        members.push(("client".to_owned(), Value::Str(lock.client.clone())));
        members.push((
            "since".to_owned(),
            Value::DateTime(Utc::from_system(lock.since).iso8601_basic()),
        ));
    }
    Value::Struct(members)
}

fn multicall(
    store: &Store,
    method: &Method,
    params: &[Value],
    events: &mut Vec<Event>,
) -> (Result<Value, Fault>, u64) {
    let calls = match params {
        [Value::Array(calls)] => calls,
        _ => {
            let got = params
                .iter()
                .map(Value::type_name)
                .collect::<Vec<_>>()
                .join(", ");
            let fault = Fault::new(
                FaultCode::InvalidParams,
                format!("{}, got ({got})", method.expectation()),
            );
            return (Err(fault), 0);
        }
    };
    let mut seq = 0;
    let mut results = Vec::with_capacity(calls.len());
    for (i, entry) in calls.iter().enumerate() {
        let call = match (entry.member("methodName"), entry.member("params")) {
            (Some(Value::Str(name)), Some(Value::Array(params))) => Call {
                method: name.clone(),
                params: params.clone(),
            },
            (Some(Value::Str(name)), None) => Call {
                method: name.clone(),
                params: Vec::new(),
            },
            _ => {
                let message = format!(
                    "system.multicall call {i} must be a struct with a string methodName and an array params"
                );
                results.push(Fault::new(FaultCode::InvalidParams, message).to_value());
                continue;
            }
        };
        let (value, observed) = run(store, &call, events, false);
        seq = seq.max(observed);
        results.push(match value {
            Ok(value) => Value::Array(vec![value]),
            Err(fault) => fault.to_value(),
        });
    }
    (Ok(Value::Array(results)), seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_read_well() {
        let lock = find("lock").unwrap();
        assert_eq!(
            lock.strings(&[Value::Str("r".into())]).unwrap_err().message,
            "lock expects 2 string parameters (resource, client), got 1"
        );
        assert_eq!(
            lock.strings(&[Value::Str("r".into()), Value::Int(3)])
                .unwrap_err()
                .message,
            "lock expects 2 string parameters (resource, client), got (string, int)"
        );
        assert_eq!(
            find("locks")
                .unwrap()
                .strings(&[Value::Nil])
                .unwrap_err()
                .message,
            "locks expects no parameters, got 1"
        );
        assert_eq!(
            find("status").unwrap().expectation(),
            "status expects 1 string parameter (resource)"
        );
    }

    #[test]
    fn long_names_are_cut_short() {
        assert_eq!(shown("lock"), "\"lock\"");
        let long = "x".repeat(100_000);
        assert_eq!(
            shown(&long),
            format!("{:?}... (100000 bytes)", "x".repeat(100))
        );
    }

    #[test]
    fn methods_are_sorted() {
        let names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }
}
