//! The methods lockd serves: one table (`METHODS`) holds each method's
//! name, parameters, help text and handler, and dispatch, the introspection
//! methods and `system.multicall` all read it. No HTTP here, and no fault
//! text: a call ends in a [`Value`] or a typed [`CallError`], which the
//! server turns into a fault when it writes the reply.
//!
//! A new method is one `Spec` in `METHODS` and one handler function; its
//! signature follows from the handler's shape (`Handler`), which dispatch
//! checks the parameters against. A handler of a new shape (an int
//! parameter, say) is a new `Handler` variant and its line in `run`.

use std::fmt;
use std::sync::Arc;

use crate::clock::Utc;
use crate::store::{self, Lock, Observed, Store};
use crate::xmlrpc::{Call, Fault, FaultCode, Value};

/// gocept.lockd's refusals were Python 2 exceptions turned into faults.
pub const PY2_EXCEPTION: &str = "<type 'exceptions.Exception'>:";

/// A method lockd serves: an entry of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Method(usize);

impl Method {
    /// The method called `name`, if lockd serves one.
    pub fn named(name: &str) -> Option<Method> {
        METHODS
            .iter()
            .position(|spec| spec.name == name)
            .map(Method)
    }

    /// Every method, sorted by name.
    pub fn all() -> impl Iterator<Item = Method> {
        (0..METHODS.len()).map(Method)
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its place in [`Method::all`], from 0: an index for per-method counters.
    pub fn index(self) -> usize {
        self.0
    }

    fn spec(self) -> &'static Spec {
        // A `Method` is only ever made from a position in METHODS.
        &METHODS[self.0]
    }

    /// The XML-RPC types of its parameters.
    fn param_types(self) -> &'static [&'static str] {
        match self.spec().handler {
            Handler::NoParams(_) => &[],
            Handler::OneString(_) => &["string"],
            Handler::TwoStrings(_) => &["string", "string"],
            Handler::ArrayString(_) => &["array", "string"],
            Handler::TwoStringsInt(_) => &["string", "string", "int"],
            Handler::TwoStringsIntString(_) => &["string", "string", "int", "string"],
            Handler::Calls(_) => &["array"],
        }
    }

    /// "lock expects 2 string parameters (resource, client)"
    fn expectation(self) -> String {
        let spec = self.spec();
        match (spec.params, self.param_types()) {
            ([], _) => format!("{} expects no parameters", spec.name),
            ([one], [kind]) => format!("{} expects 1 {kind} parameter ({one})", spec.name),
            (many, [kind, ..]) if self.param_types().iter().all(|t| t == kind) => format!(
                "{} expects {} {kind} parameters ({})",
                spec.name,
                many.len(),
                many.join(", ")
            ),
            (many, kinds) => {
                let each: Vec<String> = many
                    .iter()
                    .zip(kinds)
                    .map(|(name, kind)| format!("{name}: {kind}"))
                    .collect();
                format!(
                    "{} expects {} parameters ({})",
                    spec.name,
                    many.len(),
                    each.join(", ")
                )
            }
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method's entry in the table.
struct Spec {
    name: &'static str,
    /// The parameters' names, one for each type the handler takes.
    params: &'static [&'static str],
    returns: &'static str,
    help: &'static str,
    /// Whether its calls change locks: each is a log line and a metrics
    /// event, also when its parameters are wrong.
    changes_locks: bool,
    handler: Handler,
}

/// What a call ends in, before it becomes a reply.
type Answer = Result<Value, CallError>;

/// A handler, by the parameters it takes; dispatch checks the call's
/// parameters against this shape before the handler runs.
#[derive(Clone, Copy)]
enum Handler {
    NoParams(fn(&mut Context) -> Answer),
    OneString(fn(&mut Context, &str) -> Answer),
    TwoStrings(fn(&mut Context, &str, &str) -> Answer),
    /// An array (of resource names) and a string.
    ArrayString(fn(&mut Context, &[Value], &str) -> Answer),
    /// Two strings and a token.
    TwoStringsInt(fn(&mut Context, &str, &str, i32) -> Answer),
    /// Two strings, a token and a string.
    TwoStringsIntString(fn(&mut Context, &str, &str, i32, &str) -> Answer),
    /// An array of calls (`system.multicall`).
    Calls(fn(&mut Context, &[Value]) -> Answer),
}

/// Every method, sorted by name.
const METHODS: &[Spec] = &[
    Spec {
        name: "acquire",
        params: &["resource", "client"],
        returns: "struct",
        help: "acquire(resource, client): take the lock on resource for client, as lock does, and \
               return it as a struct {resource, client, token, since}. token is the grant's fencing \
               token: an int that only grows, over the resource's whole history. Faults with code 1 \
               \"Resource already locked by 'holder'\" if anyone holds it. On stable storage before \
               the reply is sent.",
        changes_locks: true,
        handler: Handler::TwoStrings(acquire),
    },
    Spec {
        name: "acquire_many",
        params: &["resources", "client"],
        returns: "array",
        help: "acquire_many(resources, client): take the locks on every resource of the array \
               (1 to 1024 names) for client, or none of them; an array of {resource, client, token, \
               since} structs in the order given. Faults with code 1 \"Resource 'name' already \
               locked by 'holder'\" naming the first resource in the way. One durable step: after \
               a crash either all or none are held.",
        changes_locks: true,
        handler: Handler::ArrayString(acquire_many),
    },
    Spec {
        name: "break_lock",
        params: &["resource", "holder", "token", "reason"],
        returns: "struct",
        help: "break_lock(resource, holder, token, reason): remove the lock on resource if holder \
               holds it under token (0 for a lock without a token), and return the struct of the \
               lock removed. Faults with code 1 saying who holds it otherwise. reason must not be \
               empty: it goes into lockd.audit.jsonl in the lock directory, with the caller's \
               address. The old token fails check from then on.",
        changes_locks: true,
        handler: Handler::TwoStringsIntString(break_lock),
    },
    Spec {
        name: "check",
        params: &["resource", "client", "token"],
        returns: "boolean",
        help: "check(resource, client, token): true exactly when resource is held by client under \
               token right now. Call it just before acting on the resource, to refuse a holder \
               whose grant has ended.",
        changes_locks: false,
        handler: Handler::TwoStringsInt(check),
    },
    Spec {
        name: "fence",
        params: &["client", "reason"],
        returns: "array",
        help: "fence(client, reason): release every lock client holds (after its node was fenced, \
               i.e. powered off), and return them as an array of {resource, client, token, since} \
               structs; empty if it held none. Each goes into lockd.audit.jsonl with the reason.",
        changes_locks: true,
        handler: Handler::TwoStrings(fence),
    },
    Spec {
        name: "lock",
        params: &["resource", "client"],
        returns: "nil",
        help: "lock(resource, client): take the lock on resource for client. Returns nil; \
               faults with code 1 \"Resource already locked by 'holder'\" if anyone holds it. \
               The lock is on stable storage before the reply is sent.",
        changes_locks: true,
        handler: Handler::TwoStrings(lock),
    },
    Spec {
        name: "locks",
        params: &[],
        returns: "array",
        help: "locks(): every held lock as a struct {resource, locked, client, since, token}, sorted \
               by resource (token 0: a lock without one, taken with lock or by gocept.lockd).",
        changes_locks: false,
        handler: Handler::NoParams(locks),
    },
    Spec {
        name: "release",
        params: &["resource", "client", "token"],
        returns: "nil",
        help: "release(resource, client, token): release the lock client holds on resource under \
               token, and only that grant: a late retry of an old release cannot free a newer \
               grant. Faults with code 1 otherwise. On stable storage before the reply is sent.",
        changes_locks: true,
        handler: Handler::TwoStringsInt(release),
    },
    Spec {
        name: "status",
        params: &["resource"],
        returns: "struct",
        help: "status(resource): a struct {resource, locked} and, when locked, client, since \
               (dateTime.iso8601, UTC, when the lock was taken) and token (0: a lock without one).",
        changes_locks: false,
        handler: Handler::OneString(status),
    },
    Spec {
        name: "system.listMethods",
        params: &[],
        returns: "array",
        help: "system.listMethods(): the names of all methods, sorted.",
        changes_locks: false,
        handler: Handler::NoParams(list_methods),
    },
    Spec {
        name: "system.methodHelp",
        params: &["method"],
        returns: "string",
        help: "system.methodHelp(method): what the method does.",
        changes_locks: false,
        handler: Handler::OneString(method_help),
    },
    Spec {
        name: "system.methodSignature",
        params: &["method"],
        returns: "array",
        help: "system.methodSignature(method): its signatures, each [return type, parameter types...].",
        changes_locks: false,
        handler: Handler::OneString(method_signature),
    },
    Spec {
        name: "system.multicall",
        params: &["calls"],
        returns: "array",
        help: "system.multicall(calls): run an array of {methodName, params} structs in order. \
               Each result comes back as a one-element array, each fault as a fault struct in its place.",
        changes_locks: false,
        handler: Handler::Calls(multicall),
    },
    Spec {
        name: "unlock",
        params: &["resource", "client"],
        returns: "nil",
        help: "unlock(resource, client): release the lock client holds on resource. Returns nil; \
               faults with code 1 \"Resource not locked\" or \"Resource locked by 'holder' cannot be unlocked by 'client'\". \
               The release is on stable storage before the reply is sent.",
        changes_locks: true,
        handler: Handler::TwoStrings(unlock),
    },
];

/// What a call did to a lock, for the log line and the metrics.
#[derive(Debug, Clone)]
pub struct Event {
    pub method: Method,
    pub resource: String,
    /// The client, once the parameters were valid.
    pub client: Option<String>,
    pub outcome: Result<Effect, CallError>,
}

/// A change a call made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Granted,
    Released,
}

/// The answer to one request, and the change it observed: it may be sent
/// once that change is durable.
#[derive(Debug)]
pub struct Reply {
    /// The method called, if lockd serves it (for the metrics).
    pub method: Option<Method>,
    pub value: Result<Value, CallError>,
    pub seq: u64,
    pub events: Vec<Event>,
}

impl Reply {
    /// The reply to a request whose body is not a call.
    pub fn malformed(fault: Fault) -> Reply {
        Reply {
            method: None,
            value: Err(CallError::Request(fault)),
            seq: 0,
            events: Vec::new(),
        }
    }
}

/// Why a call gave no value.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The body is not an XML-RPC call; the codec says why.
    Request(Fault),
    /// No method of that name.
    NoMethod(String),
    /// The parameters do not fit the method.
    Params { method: Method, got: Got },
    /// `system.methodHelp` or `system.methodSignature` of a name lockd does
    /// not serve.
    NoMethodNamed(String),
    /// `system.multicall` inside `system.multicall`.
    Nested(Method),
    /// Call number `index` of a `system.multicall` is not a call.
    NotACall { method: Method, index: usize },
    /// A token below the least a grant can have (1; 0 for `break_lock`).
    BadToken { token: i32, least: i32 },
    /// Item `index` of `acquire_many`'s resources is not a string.
    NotAName { index: usize, kind: &'static str },
    /// The lock core said no, or failed. Shared: one failure is the answer,
    /// the log line and the metrics event of a call.
    Store(Arc<store::Error>),
    /// The change was made but the directory fsync after it failed; shared
    /// by every reply waiting for that fsync.
    NotSynced(Arc<store::Error>),
}

/// What parameters a call had, when they do not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Count(usize),
    Types(Vec<&'static str>),
}

/// How bad a [`CallError`] is: a refusal of the lock contract, a call that
/// cannot be carried out as made, or a failure of lockd's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Refused,
    Invalid,
    Failed,
}

impl CallError {
    pub fn kind(&self) -> Kind {
        match self {
            CallError::Store(error) => match **error {
                store::Error::Refused(_) => Kind::Refused,
                store::Error::Name(_) => Kind::Invalid,
                store::Error::Io { .. } => Kind::Failed,
            },
            CallError::NotSynced(_) => Kind::Failed,
            _ => Kind::Invalid,
        }
    }

    /// The fault code it is answered with.
    pub fn code(&self) -> FaultCode {
        match (self, self.kind()) {
            (_, Kind::Refused) => FaultCode::Refused,
            (_, Kind::Failed) => FaultCode::Internal,
            (CallError::Request(fault), _) => fault.code,
            (CallError::NoMethod(_), _) => FaultCode::MethodNotFound,
            (CallError::Nested(_), _) => FaultCode::InvalidRequest,
            _ => FaultCode::InvalidParams,
        }
    }

    /// The fault it is answered with. Refusals carry gocept.lockd's Python
    /// exception type in front, as callers match on it.
    pub fn to_fault(&self) -> Fault {
        let message = match self {
            CallError::Store(error) => match **error {
                store::Error::Refused(ref refusal) => format!("{PY2_EXCEPTION}{refusal}"),
                store::Error::Name(_) => error.to_string(),
                store::Error::Io { .. } => format!("lock directory failure: {error}"),
            },
            other => other.to_string(),
        };
        Fault::new(self.code(), message)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Request(fault) => f.write_str(&fault.message),
            CallError::NoMethod(name) => write!(
                f,
                "no method {}; system.listMethods lists the methods lockd serves",
                shown(name)
            ),
            CallError::Params { method, got } => {
                write!(f, "{}, got ", method.expectation())?;
                match got {
                    Got::Count(n) => write!(f, "{n}"),
                    Got::Types(types) => write!(f, "({})", types.join(", ")),
                }
            }
            CallError::NoMethodNamed(name) => write!(f, "no method {}", shown(name)),
            CallError::Nested(method) => write!(f, "{} cannot be nested", method.name()),
            CallError::NotACall { method, index } => write!(
                f,
                "{} call {index} must be a struct with a string methodName and an array params",
                method.name()
            ),
            CallError::BadToken { token, least } => write!(
                f,
                "the token is {token}: tokens are {least} or more (use the token acquire returned)"
            ),
            CallError::NotAName { index, kind } => write!(
                f,
                "acquire_many's resources must be an array of strings; item {index} is a {kind}"
            ),
            CallError::Store(error) => error.fmt(f),
            CallError::NotSynced(error) => write!(
                f,
                "the lock directory could not be synced: {error}; the outcome of this call may not survive a crash, check status before relying on it"
            ),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Store(error) | CallError::NotSynced(error) => Some(&**error),
            _ => None,
        }
    }
}

/// Run one request's call against the store; `caller` is the address it
/// came from (for the audit trail of `break_lock` and `fence`).
pub fn dispatch(store: &Store, call: &Call, caller: &str) -> Reply {
    let mut record = Record::default();
    let value = run(store, call, caller, false, &mut record);
    Reply {
        method: Method::named(&call.method),
        value,
        seq: record.seq,
        events: record.events,
    }
}

/// What the calls of one request observed.
#[derive(Default)]
struct Record {
    events: Vec<Event>,
    /// The last change observed.
    seq: u64,
}

/// What a handler works with.
struct Context<'a> {
    store: &'a Store,
    caller: &'a str,
    method: Method,
    /// Whether the call is one of a `system.multicall`.
    nested: bool,
    record: &'a mut Record,
}

impl Context<'_> {
    /// Note the change number a store operation observed; its result.
    fn observe<T>(&mut self, observed: Observed<T>) -> Result<T, CallError> {
        self.record.seq = self.record.seq.max(observed.seq);
        observed
            .result
            .map_err(|error| CallError::Store(Arc::new(error)))
    }

    /// Note an event of this call on `resource`.
    fn event(&mut self, resource: &str, client: &str, outcome: Result<Effect, CallError>) {
        self.record.events.push(Event {
            method: self.method,
            resource: resource.to_owned(),
            client: Some(client.to_owned()),
            outcome,
        });
    }

    /// A change to a lock: note its event (`effect` if it was made), and
    /// pass on its result.
    fn change<T>(
        &mut self,
        observed: Observed<T>,
        effect: Effect,
        resource: &str,
        client: &str,
    ) -> Result<T, CallError> {
        let result = self.observe(observed);
        self.record.events.push(Event {
            method: self.method,
            resource: resource.to_owned(),
            client: Some(client.to_owned()),
            outcome: result.as_ref().map(|_| effect).map_err(Clone::clone),
        });
        result
    }
}

fn run(store: &Store, call: &Call, caller: &str, nested: bool, record: &mut Record) -> Answer {
    let method =
        Method::named(&call.method).ok_or_else(|| CallError::NoMethod(call.method.clone()))?;
    let mut context = Context {
        store,
        caller,
        method,
        nested,
        record,
    };
    let params = call.params.as_slice();
    let answer = match (method.spec().handler, params) {
        (Handler::NoParams(handler), []) => handler(&mut context),
        (Handler::OneString(handler), [Value::Str(a)]) => handler(&mut context, a),
        (Handler::TwoStrings(handler), [Value::Str(a), Value::Str(b)]) => {
            handler(&mut context, a, b)
        }
        (Handler::ArrayString(handler), [Value::Array(a), Value::Str(b)]) => {
            handler(&mut context, a, b)
        }
        (Handler::TwoStringsInt(handler), [Value::Str(a), Value::Str(b), Value::Int(c)]) => {
            handler(&mut context, a, b, *c)
        }
        (
            Handler::TwoStringsIntString(handler),
            [Value::Str(a), Value::Str(b), Value::Int(c), Value::Str(d)],
        ) => handler(&mut context, a, b, *c, d),
        (Handler::Calls(handler), [Value::Array(calls)]) => handler(&mut context, calls),
        (handler, _) => {
            let types = || params.iter().map(Value::type_name).collect();
            // The count when it is wrong, else the types. (A multicall has
            // always shown the types.)
            let got = match handler {
                Handler::Calls(_) => Got::Types(types()),
                _ if params.len() != method.param_types().len() => Got::Count(params.len()),
                _ => Got::Types(types()),
            };
            Err(CallError::Params { method, got })
        }
    };
    if let (Err(error @ CallError::Params { .. }), true, Some(resource)) = (
        &answer,
        method.spec().changes_locks,
        params.first().and_then(Value::as_str),
    ) {
        context.record.events.push(Event {
            method,
            resource: resource.to_owned(),
            client: None,
            outcome: Err(error.clone()),
        });
    }
    answer
}

fn lock(context: &mut Context, resource: &str, client: &str) -> Answer {
    let observed = context.store.lock(resource, client);
    context.change(observed, Effect::Granted, resource, client)?;
    Ok(Value::Nil)
}

fn unlock(context: &mut Context, resource: &str, client: &str) -> Answer {
    let observed = context.store.unlock(resource, client);
    context.change(observed, Effect::Released, resource, client)?;
    Ok(Value::Nil)
}

fn acquire(context: &mut Context, resource: &str, client: &str) -> Answer {
    let observed = context.store.acquire(resource, client);
    let lock = context.change(observed, Effect::Granted, resource, client)?;
    Ok(lock_value(&lock))
}

fn acquire_many(context: &mut Context, resources: &[Value], client: &str) -> Answer {
    let names = resources
        .iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::Str(name) => Ok(name.clone()),
            other => Err(CallError::NotAName {
                index,
                kind: other.type_name(),
            }),
        })
        .collect::<Result<Vec<String>, CallError>>()?;
    let observed = context.store.acquire_many(&names, client);
    let locks = context.observe(observed);
    match &locks {
        Ok(locks) => {
            for lock in locks {
                context.event(&lock.resource, client, Ok(Effect::Granted));
            }
        }
        Err(error) => context.event(&names.join(", "), client, Err(error.clone())),
    }
    Ok(Value::Array(locks?.iter().map(lock_value).collect()))
}

/// A token from a call, if it is at least `least`.
fn token(token: i32, least: i32) -> Result<u32, CallError> {
    u32::try_from(token)
        .ok()
        .filter(|_| token >= least)
        .ok_or(CallError::BadToken { token, least })
}

fn check(context: &mut Context, resource: &str, client: &str, given: i32) -> Answer {
    let given = token(given, 1)?;
    let current = context.observe(context.store.check(resource, client, given))?;
    Ok(Value::Bool(current))
}

fn release(context: &mut Context, resource: &str, client: &str, given: i32) -> Answer {
    let given = token(given, 1)?;
    let observed = context.store.release(resource, client, given);
    context.change(observed, Effect::Released, resource, client)?;
    Ok(Value::Nil)
}

fn break_lock(
    context: &mut Context,
    resource: &str,
    holder: &str,
    given: i32,
    reason: &str,
) -> Answer {
    let given = token(given, 0)?;
    let why = store::Reason {
        reason,
        caller: context.caller,
    };
    let observed = context.store.break_lock(resource, holder, given, &why);
    let lock = context.change(observed, Effect::Released, resource, holder)?;
    Ok(lock_value(&lock))
}

fn fence(context: &mut Context, client: &str, reason: &str) -> Answer {
    let why = store::Reason {
        reason,
        caller: context.caller,
    };
    let observed = context.store.fence(client, &why);
    let locks = context.observe(observed);
    match &locks {
        Ok(locks) => {
            for lock in locks {
                context.event(&lock.resource, client, Ok(Effect::Released));
            }
        }
        Err(error) => context.event("(every lock)", client, Err(error.clone())),
    }
    Ok(Value::Array(locks?.iter().map(lock_value).collect()))
}

/// A lock as `acquire` and the other fencing methods return it.
fn lock_value(lock: &Lock) -> Value {
    Value::Struct(vec![
        ("resource".to_owned(), Value::Str(lock.resource.clone())),
        ("client".to_owned(), Value::Str(lock.client.clone())),
        ("token".to_owned(), token_value(lock.token)),
        (
            "since".to_owned(),
            Value::DateTime(Utc::from_system(lock.since).iso8601_basic()),
        ),
    ])
}

/// A token as an XML-RPC int: tokens never pass `i32::MAX`.
fn token_value(token: u32) -> Value {
    Value::Int(i32::try_from(token).unwrap_or(i32::MAX))
}

fn status(context: &mut Context, resource: &str) -> Answer {
    let lock = context.observe(context.store.status(resource))?;
    Ok(status_value(resource, lock.as_ref()))
}

fn locks(context: &mut Context) -> Answer {
    let locks = context.observe(context.store.locks())?;
    Ok(Value::Array(
        locks
            .iter()
            .map(|l| status_value(&l.resource, Some(l)))
            .collect(),
    ))
}

fn list_methods(_: &mut Context) -> Answer {
    Ok(Value::Array(
        Method::all()
            .map(|m| Value::Str(m.name().to_owned()))
            .collect(),
    ))
}

fn method_help(_: &mut Context, name: &str) -> Answer {
    let method = Method::named(name).ok_or_else(|| CallError::NoMethodNamed(name.to_owned()))?;
    Ok(Value::Str(method.spec().help.to_owned()))
}

fn method_signature(_: &mut Context, name: &str) -> Answer {
    let method = Method::named(name).ok_or_else(|| CallError::NoMethodNamed(name.to_owned()))?;
    let returns = std::iter::once(method.spec().returns);
    let signature = returns
        .chain(method.param_types().iter().copied())
        .map(|t| Value::Str(t.to_owned()))
        .collect();
    Ok(Value::Array(vec![Value::Array(signature)]))
}

fn multicall(context: &mut Context, calls: &[Value]) -> Answer {
    if context.nested {
        return Err(CallError::Nested(context.method));
    }
    let mut results = Vec::with_capacity(calls.len());
    for (index, entry) in calls.iter().enumerate() {
        let params = match entry.member("params") {
            Some(Value::Array(params)) => Some(params.clone()),
            None => Some(Vec::new()),
            Some(_) => None,
        };
        let call = match (entry.member("methodName"), params) {
            (Some(Value::Str(name)), Some(params)) => Call {
                method: name.clone(),
                params,
            },
            _ => {
                let error = CallError::NotACall {
                    method: context.method,
                    index,
                };
                results.push(error.to_fault().to_value());
                continue;
            }
        };
        results.push(
            match run(context.store, &call, context.caller, true, context.record) {
                Ok(value) => Value::Array(vec![value]),
                Err(error) => error.to_fault().to_value(),
            },
        );
    }
    Ok(Value::Array(results))
}

/// A name from the network as a fault or log line shows it: quoted, and cut
/// short, so a 1 MiB method name does not come back as a 1 MiB fault.
pub fn shown(name: &str) -> String {
    Shown(name).to_string()
}

/// [`shown`], written where it goes (a log line) without a string of its
/// own.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 100;
        let name = self.0;
        match name.char_indices().nth(MAX) {
            None => write!(f, "{name:?}"),
            Some((end, _)) => write!(f, "{:?}... ({} bytes)", &name[..end], name.len()),
        }
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
        members.push(("token".to_owned(), token_value(lock.token)));
    }
    Value::Struct(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Refusal;

    fn method(name: &str) -> Method {
        Method::named(name).unwrap()
    }

    fn params_error(name: &str, got: Got) -> String {
        CallError::Params {
            method: method(name),
            got,
        }
        .to_string()
    }

    #[test]
    fn expectations_read_well() {
        assert_eq!(
            params_error("lock", Got::Count(1)),
            "lock expects 2 string parameters (resource, client), got 1"
        );
        assert_eq!(
            params_error("lock", Got::Types(vec!["string", "int"])),
            "lock expects 2 string parameters (resource, client), got (string, int)"
        );
        assert_eq!(
            params_error("locks", Got::Count(1)),
            "locks expects no parameters, got 1"
        );
        assert_eq!(
            method("status").expectation(),
            "status expects 1 string parameter (resource)"
        );
        assert_eq!(
            method("system.multicall").expectation(),
            "system.multicall expects 1 array parameter (calls)"
        );
    }

    #[test]
    fn faults_have_the_codes_of_the_interoperability_spec() {
        let cases = [
            (CallError::NoMethod("x".into()), FaultCode::MethodNotFound),
            (
                CallError::Nested(method("system.multicall")),
                FaultCode::InvalidRequest,
            ),
            (
                CallError::NoMethodNamed("x".into()),
                FaultCode::InvalidParams,
            ),
            (
                CallError::Store(Arc::new(store::Error::Refused(Refusal::NotLocked))),
                FaultCode::Refused,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.to_fault().code, code, "{error}");
        }
        let refused = CallError::Store(Arc::new(store::Error::Refused(Refusal::NotLocked)));
        assert_eq!(
            refused.to_fault().message,
            "<type 'exceptions.Exception'>:Resource not locked"
        );
        assert_eq!(refused.to_string(), "Resource not locked");
        assert_eq!(refused.kind(), Kind::Refused);
    }

    fn dispatch_test(store: &Store, call: &Call) -> Reply {
        dispatch(store, call, "127.0.0.1:1")
    }

    fn call(method: &str, params: Vec<Value>) -> Call {
        Call {
            method: method.to_owned(),
            params,
        }
    }

    fn strings(list: &[&str]) -> Vec<Value> {
        list.iter().map(|s| Value::Str((*s).to_owned())).collect()
    }

    #[test]
    fn dispatch_runs_the_table() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&temp.path().join("locks")).unwrap();
        let lock = |client: &str| dispatch_test(&store, &call("lock", strings(&["r", client])));

        let granted = lock("a");
        assert_eq!(granted.value.as_ref().ok(), Some(&Value::Nil));
        assert_eq!(granted.method, Some(method("lock")));
        assert!(matches!(
            granted.events.as_slice(),
            [Event { outcome: Ok(Effect::Granted), client: Some(c), .. }] if c == "a"
        ));
        let refused = lock("b");
        let error = refused.value.unwrap_err();
        assert_eq!(error.kind(), Kind::Refused);
        assert_eq!(
            error.to_fault().message,
            "<type 'exceptions.Exception'>:Resource already locked by 'a'"
        );

        // Wrong parameters to a lock change are an event too, without a client.
        let invalid = dispatch_test(
            &store,
            &call("lock", vec![Value::Str("r".into()), Value::Int(1)]),
        );
        assert_eq!(invalid.value.unwrap_err().code(), FaultCode::InvalidParams);
        assert!(matches!(
            invalid.events.as_slice(),
            [Event {
                outcome: Err(_),
                client: None,
                ..
            }]
        ));

        let unknown = dispatch_test(&store, &call("frobnicate", vec![]));
        assert_eq!(unknown.method, None);
        assert_eq!(unknown.value.unwrap_err().code(), FaultCode::MethodNotFound);

        let names = dispatch_test(&store, &call("system.listMethods", vec![]))
            .value
            .unwrap();
        let Value::Array(names) = names else {
            panic!("{names:?}")
        };
        assert_eq!(names.len(), Method::all().count());
        let signature = dispatch_test(
            &store,
            &call("system.methodSignature", strings(&["system.multicall"])),
        );
        assert_eq!(
            signature.value.unwrap(),
            Value::Array(vec![Value::Array(strings(&["array", "array"]))])
        );
    }

    #[test]
    fn multicall_answers_each_call_in_its_place() {
        let temp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&temp.path().join("locks")).unwrap();
        let entry = |name: &str, params: Vec<Value>| {
            Value::Struct(vec![
                ("methodName".into(), Value::Str(name.into())),
                ("params".into(), Value::Array(params)),
            ])
        };
        let calls = vec![
            entry("unlock", strings(&["r", "a"])),
            entry("system.multicall", vec![Value::Array(vec![])]),
            Value::Int(3),
            entry("lock", strings(&["r", "a"])),
        ];
        let reply = dispatch_test(&store, &call("system.multicall", vec![Value::Array(calls)]));
        let Ok(Value::Array(results)) = reply.value else {
            panic!("{:?}", reply.value)
        };
        let code = |v: &Value| v.member("faultCode").cloned();
        assert_eq!(code(&results[0]), Some(Value::Int(1)));
        assert_eq!(code(&results[1]), Some(Value::Int(-32600)));
        assert_eq!(code(&results[2]), Some(Value::Int(-32602)));
        assert_eq!(results[3], Value::Array(vec![Value::Nil]));
        assert_eq!(reply.events.len(), 2, "{:?}", reply.events);
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
    fn the_table_is_sorted_and_each_entry_names_its_parameters() {
        let names: Vec<_> = Method::all().map(Method::name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for method in Method::all() {
            assert_eq!(
                method.spec().params.len(),
                method.param_types().len(),
                "{method:?}"
            );
            assert_eq!(Method::named(method.name()), Some(method));
        }
    }
}
