//! The host's invocations of a module: registering the handlers that answer them (each runs
//! on a thread of its own, see connection.rs), typed per kind, and the shutdown handler.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Shutdown};
use crate::connection::*;
use crate::error::HandlerError;
use crate::types::*;
use crate::value::{from_value, to_value, Value};

impl Client {
    // ---- invocations ----

    /// Handles invocations of `kind` ("cli", "rpc", "module_api", "timer", "provider",
    /// "config", "health", ...). The handler runs on its own thread (it may make requests) and answers
    /// with its result, or with its error's code and message. A later registration replaces
    /// an earlier one. Kinds without a handler are answered `unknown_method`, except
    /// `health` (`{status: "ok"}`), `config` (the new configuration is stored, see
    /// [`Client::config`]) and `shutdown` (see [`Client::on_shutdown`]). Register handlers
    /// before [`Client::ready`]: an invocation that arrives first finds none. The typed
    /// helpers ([`Client::on_module_api`], [`Client::on_rpc`], [`Client::on_cli`],
    /// [`Client::on_timer`], [`Client::on_provider`], [`Client::on_config`]) register a
    /// handler of their kind through this method.
    pub fn on_invocation<F, R, E>(&self, kind: &str, handler: F)
    where
        F: Fn(Value) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        let h: Handler = Arc::new(move |params| match handler(params) {
            Ok(r) => {
                to_value(&r).map_err(|e| HandlerError::new("not_plain_data", format!("cannot encode the result: {e}")))
            }
            Err(e) => Err(e.into()),
        });
        self.inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_owned(), h);
    }

    /// Handles calls of this module's API by other modules (`module_api` invocations): match
    /// on `call.method` and answer `Err(call.unknown_method())` for others. Register it before
    /// [`Client::register_module_api`].
    ///
    /// ```no_run
    /// # let client: modhost_sdk::Client = unimplemented!();
    /// use modhost_sdk::{HandlerError, ModuleApiCall, Value};
    /// client.on_module_api(|call: ModuleApiCall| -> Result<Value, HandlerError> {
    ///     match call.method.as_str() {
    ///         "echo" => Ok(Value::from_pairs([("from", call.caller.into()), ("params", call.params)])),
    ///         _ => Err(call.unknown_method()),
    ///     }
    /// });
    /// client.register_module_api(&["echo"])?;
    /// # Ok::<(), modhost_sdk::Error>(())
    /// ```
    pub fn on_module_api<F, R, E>(&self, handler: F)
    where
        F: Fn(ModuleApiCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("module_api", handler)
    }

    /// Handles this module's JSON-RPC methods (`rpc` invocations, `call.method` without the
    /// module prefix). Errors reach the RPC client: `invalid_params` and `unknown_method` as
    /// JSON-RPC "invalid params" and "method not found", others as module errors.
    pub fn on_rpc<F, R, E>(&self, handler: F)
    where
        F: Fn(RpcCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("rpc", handler)
    }

    /// Handles this module's CLI commands (`cli` invocations). A string result is printed as
    /// is, anything else as JSON.
    pub fn on_cli<F, R, E>(&self, handler: F)
    where
        F: Fn(CliCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("cli", handler)
    }

    /// Handles fired timers and scheduled tasks (`timer` invocations) with the id that
    /// [`Client::register_timer`] or [`Client::schedule_task`] returned. Runs of one timer
    /// never overlap (the host skips a tick while the previous run goes on); each must finish
    /// within 30 s.
    pub fn on_timer<F, R, E>(&self, handler: F)
    where
        F: Fn(u64) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("timer", move |t: TimerCall| handler(t.id))
    }

    /// Handles lightning or payment methods for this module as a provider (`provider`
    /// invocations; see [`Client::register_provider`]).
    pub fn on_provider<F, R, E>(&self, handler: F)
    where
        F: Fn(ProviderCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("provider", handler)
    }

    /// Answers this module's hooks (`hook` invocations; see [`Client::register_hook`]): return
    /// [`HookAnswer::Continue`], [`HookAnswer::Modify`] with the new payload (only the fields
    /// the point declares modifiable may differ) or [`HookAnswer::Reject`] with a reason.
    /// Answer within the point's deadline: past it the point's failure policy applies.
    ///
    /// ```no_run
    /// # let client: modhost_sdk::Client = unimplemented!();
    /// use modhost_sdk::types::{HookAnswer, HookCall, HookPoint};
    /// use modhost_sdk::HandlerError;
    /// client.on_hook(|call: HookCall| -> Result<HookAnswer, HandlerError> {
    ///     match call.point {
    ///         HookPoint::TxSubmit => Ok(HookAnswer::Reject { reason: "not now".into() }),
    ///         _ => Ok(HookAnswer::Continue),
    ///     }
    /// });
    /// client.register_hook(HookPoint::TxSubmit, &[], &[]).unwrap();
    /// ```
    pub fn on_hook<F, E>(&self, handler: F)
    where
        F: Fn(HookCall) -> std::result::Result<HookAnswer, E> + Send + Sync + 'static,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("hook", handler)
    }

    /// Runs `handler` with the new configuration when the operator changes it (`config`
    /// invocations). The SDK has already stored it ([`Client::config`]) when the handler runs.
    pub fn on_config<F, R, E>(&self, handler: F)
    where
        F: Fn(Value) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("config", move |c: ConfigCall| handler(c.config))
    }

    /// `on_invocation` with the params decoded into `T`; params that do not fit are answered
    /// `invalid_params` without calling the handler.
    fn on_typed_invocation<T, F, R, E>(&self, kind: &'static str, handler: F)
    where
        T: DeserializeOwned,
        F: Fn(T) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_invocation(kind, move |params: Value| -> std::result::Result<R, HandlerError> {
            let call = from_value::<T>(params)
                .map_err(|e| HandlerError::new("invalid_params", format!("malformed {kind} invocation: {e}")))?;
            handler(call).map_err(Into::into)
        })
    }

    /// Runs `handler` when the host asks the module to stop, before the SDK answers the
    /// `shutdown` invocation. Finish work here (or in the main loop: after the answer the
    /// event stream ends and [`Client::wait_shutdown`] returns), then exit with status 0.
    pub fn on_shutdown<F: FnMut(&Shutdown) + Send + 'static>(&self, handler: F) {
        *lock(&self.inner.shutdown_handler) = Some(Box::new(handler));
    }
}

#[derive(Deserialize)]
struct TimerCall {
    id: u64,
}
#[derive(Deserialize)]
struct ConfigCall {
    #[serde(default = "Value::map")]
    config: Value,
}
