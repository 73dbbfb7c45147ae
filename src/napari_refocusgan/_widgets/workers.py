"""Run a core function off the GUI thread, with a progress bar, a Cancel button and notifications.

Widgets stay thin adapters (the careamics-napari / micro-sam split): they copy numpy input in the GUI
thread (lazy input is read in the task), hand :class:`TaskRunner` a *task* — a core call that accepts
``progress(done, total)`` and ``cancel()`` callbacks — and apply the result in the GUI thread. The core
checks ``cancel()`` between slices or tiles and raises :class:`~napari_refocusgan.core.focalstack.Cancelled`,
which ends the task quietly. Every failure becomes a napari notification; nothing propagates into the event
loop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QDockWidget, QWidget
from superqt.utils import ensure_main_thread

from ..core.errors import RefocusError, is_out_of_memory
from ..core.focalstack import Cancelled, CancelFn, ProgressFn

logger = logging.getLogger(__name__)

# Tests set this to True (monkeypatch) so that every task runs in the calling thread and results can be
# asserted right after the button press. Same code path otherwise: only the thread differs.
RUN_SYNCHRONOUSLY = False

T = TypeVar("T")
Task = Callable[[ProgressFn, CancelFn], T]


@dataclass
class Outcome(Generic[T]):
    """What a task produced: a value, an error, or nothing because it was cancelled."""

    value: T | None = None
    error: BaseException | None = None
    cancelled: bool = False


def run_guarded(task: Task, progress: ProgressFn, cancel: CancelFn) -> Outcome:
    """Call ``task`` and capture its result or failure (runs in the worker thread)."""
    try:
        value = task(progress, cancel)
    except Cancelled:
        return Outcome(cancelled=True)
    except Exception as exc:  # every failure is reported to the user, none may kill the GUI
        return Outcome(error=exc)
    if cancel():  # the user pressed Cancel after the last check: honour it, drop the result
        return Outcome(cancelled=True)
    return Outcome(value=value)


def error_message(exc: BaseException, description: str) -> str:
    """A notification text for ``exc``: the message itself for bad input, advice for memory errors."""
    if isinstance(exc, RefocusError):
        return f"{description}: {exc}"
    if is_out_of_memory(exc):
        return f"{description}: out of memory. Try a smaller tile size, another device or a smaller image."
    return f"{description} failed: {type(exc).__name__}: {exc}"


class _DockCloseWatcher(QObject):
    """Cancels the task when the panel holding the widget is closed. napari 0.9 then takes the widget out of
    its dock (``setParent(None)``) without destroying it while a worker still refers to it, so ``destroyed``
    does not come."""

    def __init__(self, cancel: Callable[[], None]):
        super().__init__()
        self._cancel = cancel

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._cancel()
        return False


def _dock_content(widget: QWidget) -> QWidget | None:
    """The ancestor of ``widget`` (or itself) that sits directly in a QDockWidget, if any."""
    while widget.parentWidget() is not None:
        if isinstance(widget.parentWidget(), QDockWidget):
            return widget
        widget = widget.parentWidget()
    return None


class TaskRunner(Container):
    """Progress bar + Cancel button that runs one task at a time for the widget that owns it.

    ``synchronous``: run in the calling thread; ``None`` follows :data:`RUN_SYNCHRONOUSLY`.
    After each run, ``last_status`` is ``"done"``, ``"cancelled"`` or ``"failed"``, and ``finished`` emits it.
    """

    finished = Signal(str)
    cancelling = Signal()  # the user asked the running task to stop

    def __init__(self, *, synchronous: bool | None = None):
        self._bar = ProgressBar(value=0, min=0, max=1, tooltip="progress of the running task")
        self._cancel_button = PushButton(text="Cancel", enabled=False, tooltip="stop after the current slice or tile")
        self._message = Label(value="")
        super().__init__(widgets=[self._bar, self._cancel_button, self._message], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self._cancel_button.changed.connect(self.request_cancel)
        self._cancel_event = threading.Event()
        self._synchronous = synchronous
        self._description = ""
        self._running = False
        self.worker: FunctionWorker | None = None
        self.last_status: str | None = None
        self._closed = False
        # A closed widget (or viewer) must not leave its task running, nor be written to when the task ends:
        # PyQt aborts the whole process on an exception raised in a slot, such as "wrapped C/C++ object
        # has been deleted".
        self.native.destroyed.connect(self._on_destroyed)
        self._dock_watcher = _DockCloseWatcher(self.request_cancel)
        self._watched: QWidget | None = None

    def _on_destroyed(self, *_: Any) -> None:
        self._closed = True
        self._cancel_event.set()

    @property
    def busy(self) -> bool:
        return self._running

    @property
    def stopping(self) -> bool:
        """A task is running and Cancel was pressed: it ends at its next check."""
        return self._running and self._cancel_event.is_set()

    def request_cancel(self, *_: Any) -> None:
        """Ask the running task to stop at its next ``cancel()`` check."""
        if self._running:
            self._cancel_event.set()
            self._message.value = "cancelling…"
            self.cancelling.emit()

    def cancel_requested(self) -> bool:
        """The ``cancel`` callback handed to the core (also honours napari's own status-bar cancel)."""
        worker = self.worker
        return self._cancel_event.is_set() or bool(worker is not None and worker.abort_requested)

    def run(self, task: Task, on_done: Callable[[Any], None], *, description: str) -> FunctionWorker | None:
        """Start ``task``; ``on_done(result)`` runs in the GUI thread when it succeeds.

        Returns the napari worker (None when run synchronously or refused because a task is running).
        """
        if self._running:
            if self.stopping:
                show_warning(f"{self._description} is stopping after Cancel: try again in a moment.")
            else:
                show_warning(f"{self._description} is still running: wait for it or press Cancel.")
            return None
        self._description = description
        self._cancel_event.clear()
        self._watch_dock()
        self._set_running(True)
        synchronous = RUN_SYNCHRONOUSLY if self._synchronous is None else self._synchronous
        if synchronous:
            self.worker = None
            self._finish(run_guarded(task, self._show_progress, self.cancel_requested), on_done)
            return None
        worker = create_worker(
            run_guarded, task, self._show_progress_from_thread, self.cancel_requested,
            _start_thread=False, _ignore_errors=True,
        )  # fmt: skip
        worker.returned.connect(lambda outcome: self._finish(outcome, on_done, worker))
        # run_guarded catches every Exception; this only sees what escapes it (e.g. a KeyboardInterrupt).
        worker.errored.connect(lambda exc: self._finish(Outcome(error=exc), on_done, worker))
        # A worker quit through napari's own cancel emits no `returned`, only `finished`.
        worker.finished.connect(lambda: self._finish(Outcome(cancelled=True), on_done, worker))
        self.worker = worker
        worker.start()
        return worker

    def _watch_dock(self) -> None:
        """Watch the panel this widget is docked in now (docking happens after construction)."""
        content = _dock_content(self.native)
        if content is not None and content is not self._watched:
            if self._watched is not None:
                with contextlib.suppress(RuntimeError):  # that panel's widget may be gone
                    self._watched.removeEventFilter(self._dock_watcher)
            content.installEventFilter(self._dock_watcher)
            self._watched = content

    def fail(self, exc: BaseException, *, description: str) -> None:
        """Report a problem found before a task could start (no layer chosen, wrong shape, …)."""
        if not isinstance(exc, RefocusError):
            logger.error("%s failed", description, exc_info=exc)
        self._report("failed", error_message(exc, description), show_error)

    def _set_running(self, running: bool) -> None:
        self._running = running
        if self._closed:
            return
        self._cancel_button.enabled = running
        if running:
            self._bar.max, self._bar.value = 0, 0  # indeterminate until the first progress report
            self._message.value = f"{self._description}…"

    def _show_progress(self, done: int, total: int) -> None:
        if not self._running or self._closed:
            return
        total = max(int(total), 1)
        self._bar.max = total
        self._bar.value = min(max(int(done), 0), total)

    @ensure_main_thread
    def _show_progress_from_thread(self, done: int, total: int) -> None:
        self._show_progress(done, total)

    def _finish(self, outcome: Outcome, on_done: Callable[[Any], None], worker: FunctionWorker | None = None) -> None:
        # Each worker ends once: `finished` follows `returned`/`errored`, and a new run may have started since.
        if not self._running or worker is not self.worker:
            return
        self._set_running(False)
        self.worker = None
        if self._closed:  # the task was cancelled when the widget closed; there is nothing left to update
            logger.info("%s ended after its widget closed", self._description)
            return
        if outcome.cancelled:
            if not self._cancel_event.is_set():  # stopped by napari (worker.quit), not our button: say so too
                self.cancelling.emit()
            self._report("cancelled", f"{self._description} cancelled.", show_info)
            return
        if outcome.error is None:
            try:
                on_done(outcome.value)
            except Exception as exc:  # applying the result (e.g. to a closed viewer) may fail too
                outcome = Outcome(error=exc)
        if outcome.error is not None:
            if not isinstance(outcome.error, RefocusError):
                logger.error("%s failed", self._description, exc_info=outcome.error)
            self._report("failed", error_message(outcome.error, self._description), show_error)
            return
        self._bar.max = self._bar.value = 1
        self._report("done", "done", None)

    def _report(self, status: str, message: str, notify: Callable[[str], None] | None) -> None:
        self.last_status = status
        self._message.value = status
        if notify is not None:
            notify(message)
        self.finished.emit(status)
