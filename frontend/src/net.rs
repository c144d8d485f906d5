//! The browser driver of a [`SyncSession`]: it owns the `WebSocket`, the
//! timer and the `online`/`offline` listeners, feeds the session its inputs
//! with `Date.now()` as the clock, and carries out what the session asks
//! (connect, disconnect, send). Every protocol decision (backoff, heartbeat,
//! offline edits, save tracking) stays in the session; this only moves bytes
//! and time, exactly like the native client. The one thing it adds: a frame
//! that carries a document update is announced (`before_apply`) right before
//! the session applies it, so the editor can take the caret as it is on
//! screen first.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use quire_protocol::ext::SUBPROTOCOL;
use quire_protocol::session::{Action, EmitError};
use quire_protocol::{Message, SessionEvent, Status, SyncMessage, SyncSession};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::browser::{Listener, now_ms, window};

/// Longest wait for a socket to open before the attempt counts as failed.
const CONNECT_TIMEOUT_MS: u32 = 10_000;

type Handler = Rc<dyn Fn(SessionEvent)>;
type BeforeApply = Rc<dyn Fn()>;

struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
    connect_timer: Option<i32>,
}

impl Socket {
    /// Detaches the handlers and closes, so nothing of this socket reaches the session again.
    fn shut(self, code: u16, reason: &str) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        if let Some(id) = self.connect_timer {
            window().clear_timeout_with_handle(id);
        }
        match self.ws.ready_state() {
            WebSocket::OPEN => {
                let _ = self.ws.close_with_code_and_reason(code, reason);
            }
            WebSocket::CONNECTING => {
                // Closing a socket that is still connecting makes the browser
                // log a warning; close it as soon as it opens instead.
                let ws = self.ws.clone();
                let reason = reason.to_owned();
                let close = Closure::once_into_js(move || {
                    let _ = ws.close_with_code_and_reason(code, &reason);
                });
                self.ws.set_onopen(Some(close.unchecked_ref()));
            }
            _ => {}
        }
    }
}

struct Inner {
    session: SyncSession,
    url: String,
    socket: Option<Socket>,
    /// Incremented for every socket, so late events of an old one are ignored.
    generation: u64,
    timer: Option<i32>,
    timer_at: Option<u64>,
    tick: Option<Closure<dyn FnMut()>>,
    handler: Handler,
    /// Runs right before a frame carrying a document update is applied.
    before_apply: BeforeApply,
    listeners: Vec<Listener>,
}

/// A running connection to one document's room. Clones share it.
#[derive(Clone)]
pub struct Conn {
    inner: Rc<RefCell<Inner>>,
}

impl Conn {
    /// Wraps `session` (not started yet); `handler` receives every session
    /// event, outside of any borrow, so it may call back into the `Conn`.
    /// `before_apply` runs right before a received frame that carries a
    /// document update (sync step 2 or update) reaches the session,
    /// outside of any borrow of the `Conn`; it must not call into it.
    pub fn new(
        session: SyncSession,
        url: String,
        handler: impl Fn(SessionEvent) + 'static,
        before_apply: impl Fn() + 'static,
    ) -> Self {
        let inner = Rc::new(RefCell::new(Inner {
            session,
            url,
            socket: None,
            generation: 0,
            timer: None,
            timer_at: None,
            tick: None,
            handler: Rc::new(handler),
            before_apply: Rc::new(before_apply),
            listeners: Vec::new(),
        }));
        let weak = Rc::downgrade(&inner);
        let tick = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                {
                    let mut i = inner.borrow_mut();
                    i.timer = None;
                    i.timer_at = None;
                    i.session.tick(now_ms());
                }
                pump(&inner);
            }
        });
        inner.borrow_mut().tick = Some(tick);

        // The platform's view of the network: reconnect at once when it comes
        // back; drop the link at once when it goes (instead of waiting for the
        // heartbeat to notice), so the badge tells the truth.
        let target: web_sys::EventTarget = window().unchecked_into();
        let weak = Rc::downgrade(&inner);
        let online = Listener::new(&target, "online", move |_| {
            if let Some(inner) = weak.upgrade() {
                inner.borrow_mut().session.network_online(now_ms());
                pump(&inner);
            }
        });
        let weak = Rc::downgrade(&inner);
        let offline = Listener::new(&target, "offline", move |_| {
            if let Some(inner) = weak.upgrade() {
                let socket = {
                    let mut i = inner.borrow_mut();
                    let socket = i.socket.take();
                    if socket.is_some() {
                        i.session
                            .on_close(None, "the browser went offline", now_ms());
                    }
                    socket
                };
                if let Some(socket) = socket {
                    socket.shut(1000, "offline");
                }
                pump(&inner);
            }
        });
        inner.borrow_mut().listeners = vec![online, offline];
        Self { inner }
    }

    pub fn start(&self) {
        self.inner.borrow_mut().session.start(now_ms());
        pump(&self.inner);
    }

    /// Closes for good (the document was closed).
    pub fn stop(&self) {
        self.inner.borrow_mut().session.stop();
        pump(&self.inner);
        let mut inner = self.inner.borrow_mut();
        if let Some(id) = inner.timer.take() {
            window().clear_timeout_with_handle(id);
        }
        if let Some(socket) = inner.socket.take() {
            socket.shut(1000, "closed");
        }
        inner.listeners.clear();
    }

    /// Sends local changes made to the document since the last call.
    pub fn flush(&self) {
        self.inner.borrow_mut().session.flush(now_ms());
        pump(&self.inner);
    }

    pub fn set_awareness(&self, state: Option<String>) {
        self.inner
            .borrow_mut()
            .session
            .set_awareness(state, now_ms());
        pump(&self.inner);
    }

    pub fn emit(
        &self,
        name: &str,
        payload: &str,
        ack_timeout_ms: Option<u64>,
    ) -> Result<u64, EmitError> {
        let result = self
            .inner
            .borrow_mut()
            .session
            .emit(name, payload, ack_timeout_ms, now_ms());
        pump(&self.inner);
        result
    }

    /// Tries to reconnect now instead of at the backoff time.
    pub fn retry_now(&self) {
        self.inner.borrow_mut().session.network_online(now_ms());
        pump(&self.inner);
    }

    pub fn status(&self) -> Status {
        self.inner.borrow().session.status()
    }

    /// The session's awareness client id (the document's client id).
    pub fn client_id(&self) -> u64 {
        self.inner.borrow().session.client_id()
    }
}

/// Carries out the session's actions and frames, re-arms the timer, then
/// hands the events to the handler (after every borrow is released).
fn pump(inner: &Rc<RefCell<Inner>>) {
    let mut retired = Vec::new();
    let (events, handler) = {
        let mut guard = inner.borrow_mut();
        let i = &mut *guard;
        loop {
            let mut progressed = false;
            while let Some(action) = i.session.poll_action() {
                progressed = true;
                match action {
                    Action::Connect => {
                        if let Some(old) = i.socket.take() {
                            retired.push(old);
                        }
                        i.generation += 1;
                        match open_socket(inner, &i.url, i.generation, i.before_apply.clone()) {
                            Ok(socket) => i.socket = Some(socket),
                            // The URL was refused outright: count it as a failed attempt.
                            Err(err) => {
                                let reason = err.as_string().unwrap_or_else(|| format!("{err:?}"));
                                i.session.on_close(None, &reason, now_ms());
                            }
                        }
                    }
                    Action::Disconnect { .. } => {
                        if let Some(old) = i.socket.take() {
                            retired.push(old);
                        }
                    }
                }
            }
            while let Some(frame) = i.session.poll_transmit() {
                progressed = true;
                if let Some(socket) = &i.socket
                    && socket.ws.ready_state() == WebSocket::OPEN
                {
                    let _ = socket.ws.send_with_u8_array(&frame);
                }
            }
            if !progressed {
                break;
            }
        }
        // Re-arm the timer for the session's next deadline.
        let deadline = i.session.next_deadline();
        if deadline != i.timer_at {
            if let Some(id) = i.timer.take() {
                window().clear_timeout_with_handle(id);
            }
            i.timer_at = deadline;
            if let (Some(at), Some(tick)) = (deadline, &i.tick) {
                let delay = at.saturating_sub(now_ms()).min(i32::MAX as u64) as i32;
                i.timer = window()
                    .set_timeout_with_callback_and_timeout_and_arguments_0(
                        tick.as_ref().unchecked_ref(),
                        delay,
                    )
                    .ok();
            }
        }
        let events: Vec<SessionEvent> = std::iter::from_fn(|| i.session.poll_event()).collect();
        (events, i.handler.clone())
    };
    for socket in retired {
        socket.shut(1000, "reconnecting");
    }
    for event in events {
        handler(event);
    }
}

/// Whether a received frame changes the document when the session applies it.
fn carries_update(frame: &[u8]) -> bool {
    matches!(
        Message::decode(frame),
        Ok(Message::Sync(
            SyncMessage::Step2(_) | SyncMessage::Update(_)
        ))
    )
}

fn open_socket(
    inner: &Rc<RefCell<Inner>>,
    url: &str,
    generation: u64,
    before_apply: BeforeApply,
) -> Result<Socket, JsValue> {
    let ws = WebSocket::new_with_str(url, SUBPROTOCOL)?;
    ws.set_binary_type(BinaryType::Arraybuffer);

    let weak = Rc::downgrade(inner);
    let on_open = Closure::<dyn FnMut()>::new(move || {
        with_current(&weak, generation, |i| {
            if let Some(socket) = i.socket.as_mut()
                && let Some(id) = socket.connect_timer.take()
            {
                window().clear_timeout_with_handle(id);
            }
            i.session.on_open(now_ms());
        });
    });
    let weak = Rc::downgrade(inner);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let data = event.data();
        let Ok(buffer) = data.dyn_into::<js_sys::ArrayBuffer>() else {
            return; // text frames are not part of the protocol
        };
        let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
        if carries_update(&bytes) {
            before_apply();
        }
        with_current(&weak, generation, |i| {
            i.session.on_message(&bytes, now_ms())
        });
    });
    let weak = Rc::downgrade(inner);
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        let code = event.code();
        let reason = event.reason();
        let mut dead = None;
        with_current(&weak, generation, |i| {
            dead = i.socket.take();
            // 1006 is the browser's "no close frame": not a code the server sent.
            let code = (code != 1006 && code != 1005).then_some(code);
            i.session.on_close(code, &reason, now_ms());
        });
        if let Some(socket) = dead {
            socket.shut(1000, "");
        }
    });
    // Errors are always followed by a close event, which does the work.
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(|_| {});
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));

    // A connect that hangs (a black-holed network) counts as failed after a while.
    let weak = Rc::downgrade(inner);
    let timeout = Closure::once_into_js(move || {
        let mut dead = None;
        with_current(&weak, generation, |i| {
            if i.socket
                .as_ref()
                .is_some_and(|s| s.ws.ready_state() == WebSocket::CONNECTING)
            {
                dead = i.socket.take();
                i.session.on_close(None, "connection timed out", now_ms());
            }
        });
        if let Some(socket) = dead {
            socket.shut(1000, "timeout");
        }
    });
    let connect_timer = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(
            timeout.unchecked_ref(),
            CONNECT_TIMEOUT_MS as i32,
        )
        .ok();
    Ok(Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
        _on_error: on_error,
        connect_timer,
    })
}

/// Runs `f` on the session if `generation` is still the live socket, then pumps.
fn with_current(weak: &Weak<RefCell<Inner>>, generation: u64, f: impl FnOnce(&mut Inner)) {
    let Some(inner) = weak.upgrade() else { return };
    {
        // Socket events come from the event loop, never while the driver is borrowed.
        let mut i = inner.borrow_mut();
        if i.generation != generation {
            return;
        }
        f(&mut i);
    }
    pump(&inner);
}
