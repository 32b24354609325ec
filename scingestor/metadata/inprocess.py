"""The fast path: ``nxsfileinfo`` command lines run in long-lived workers.

Starting ``nxsfileinfo`` costs a Python interpreter start-up and the import
of nxstools, h5py, numpy (and matplotlib for plots): some 0.3–1 s per
command, three or four commands per scan.  Here a small pool of worker
processes imports nxstools once and then executes each ``nxsfileinfo``
command line by calling nxstools' own ``main()`` with that argument
vector.  The same code writes the same files, so the JSON is byte-identical
to a subprocess run (a test checks it).

Workers are separate processes, not threads: nxstools is not written to be
thread-safe, it may call ``sys.exit`` and it evaluates FIO parameters with
``eval``; a worker that misbehaves is recycled and the daemon is not
touched.  Commands that are not ``nxsfileinfo`` run as subprocesses as
before (see :mod:`scingestor.metadata.runner`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import select
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..leftovers import pid_alive

logger = logging.getLogger(__name__)

PROGRAM = "nxsfileinfo"
#: a worker is replaced after this many commands (bounds any leak in nxstools;
#: none measured: 3,000 thumbnails and metadata runs, +8 MB after the first 250,
#: flat after).  Replacing workers costs their warm caches, so not too often.
TASKS_PER_WORKER = 5000
#: imported once by the fork server, so every worker is forked with them loaded
PRELOAD = ("scingestor.metadata.preload",)
#: packages whose console scripts' modules the fork server imports too
_OWN_PACKAGES = ("scingestor", "ScicatIngestorDS")


def handles(argv: Sequence[str]) -> bool:
    """Can this command line run in-process?"""
    return bool(argv) and os.path.basename(argv[0]) == PROGRAM


def _follow(owner: int) -> None:
    """End this worker when the ingestor that started it ends, even by ``kill -9``.

    Workers are children of the forkserver, not of the ingestor, so nothing
    else would stop them.  A pidfd becomes readable when the owner exits:
    the watching thread sleeps in the kernel until then (no wake-ups).
    """
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): look now and then
        handle = None

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while pid_alive(owner):
                time.sleep(30.0)
        os._exit(0)

    threading.Thread(target=watch, name="follow-owner", daemon=True).start()


def _preload(owner: Optional[int] = None) -> None:
    """Initialise a new worker: follow the owner, nxstools fixed, pyplot on its way.

    The fork server has imported nxstools and pyplot and applied the fix
    and the drawing shortcuts already (:mod:`scingestor.metadata.preload`).
    Where it has not (a fork server started earlier in this process
    without that preload), it is done here, pyplot by a background thread,
    so a metadata command can start at once; an attachment command waits
    for it (:func:`_plotting`).
    """
    if owner is not None:
        _follow(owner)
    os.environ.setdefault("MPLBACKEND", "Agg")
    _fix_nxstools()
    if not _plotting_ready:
        threading.Thread(target=_plotting, name="warm-pyplot", daemon=True).start()


def _fix_nxstools() -> None:
    """Import nxstools' nxsfileinfo (if not yet), apply the correction, keep its parser."""
    try:
        from . import nxstools_fix

        nxstools_fix.apply()
        _reuse_argument_parser()
    except Exception:  # pragma: no cover - nxstools missing: the command reports it
        pass


def _reuse_argument_parser() -> None:
    """Let ``nxsfileinfo.main()`` build its argument parser once per worker.

    ``main()`` builds a parser with eight sub-commands and some 200 options
    for every command line (about 1.7 ms, an eighth of a worker's time per
    scan) and parses one argument vector with it.  Parsing leaves nothing
    behind in the parser (each run gets a new namespace; the sub-command
    runners keep no state), so here the first parser built is handed out
    again: ``main()`` runs unchanged, with the same parser each time.
    """
    from nxstools import nxsfileinfo

    build = nxsfileinfo.NXSArgParser
    if getattr(build, "_scingestor_reused", False):
        return
    built: Dict[str, Any] = {}

    def parser(**kwargs: Any) -> Any:
        key = repr(sorted(kwargs.items()))
        if key not in built:
            new = build(**kwargs)
            runners: Dict[str, Any] = {}
            create = new.createSubParsers

            def create_once() -> Dict[str, Any]:
                if not runners:
                    runners.update(create())
                return runners

            new.createSubParsers = create_once
            built[key] = new
        return built[key]

    parser._scingestor_reused = True  # type: ignore[attr-defined]
    nxsfileinfo.NXSArgParser = parser


_plotting_lock = threading.Lock()
_plotting_ready = False
#: Agg renderers by (width, height, dpi), shared by the figures of a worker
_renderers: Dict[Tuple[int, int, float], Any] = {}
_RENDERER_SIZES = 4


def _plotting() -> None:
    """Import pyplot (Agg) once per worker and make its thumbnails cheaper.

    Two costs of a thumbnail that buy nothing in a worker, where nxstools
    draws one figure at a time, writes it as PNG and closes it:

    * ``pyplot.savefig`` renders the figure, writes the PNG and then calls
      ``canvas.draw_idle()``, which on the Agg canvas renders the whole
      figure a second time (about a third of a thumbnail's time) for a
      screen there is none of: ``draw_idle`` does nothing here;
    * every new figure makes a new Agg renderer (a pixel buffer), and the
      text-size cache is kept per renderer, so each plot measured its tick
      labels and titles anew: figures of one size share one renderer
      (cleared before every drawing, as a new one would be).

    The PNG bytes are unchanged (tests compare them with the ``nxsfileinfo``
    program's).
    """
    global _plotting_ready
    with _plotting_lock:
        if _plotting_ready:
            return
        _plotting_ready = True
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401  (attachments draw with it)
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg.draw_idle = _no_redraw  # type: ignore[method-assign]
            FigureCanvasAgg.get_renderer = _shared_renderer  # type: ignore[method-assign]
            _remember_text_layouts()
        except Exception:  # no matplotlib: nxstools writes no plot, as without us
            pass


#: glyph layouts of drawn texts, by font, size, resolution, text and options
_layouts: Dict[Tuple[Any, ...], Tuple[Any, List[Any]]] = {}
_LAYOUTS = 2000


def _remember_text_layouts() -> None:
    """Lay out each text of a given font and size once per worker.

    The Agg renderer lays a text out (glyphs and their positions, by
    FreeType and libraqm) every time it draws it: about a sixth of a
    thumbnail's time, most of it for tick labels, axis labels and titles
    that every thumbnail repeats.  The layout depends only on the font,
    its size, the resolution, the text and the layout options, and the
    renderer only reads it, so it is kept: the font the renderer prepares
    is handed out wrapped (:class:`_LayoutMemory`).  The pixels are the
    same (tests compare the PNG bytes with the program's).
    """
    from matplotlib.backends.backend_agg import RendererAgg

    prepare = RendererAgg._prepare_font
    if getattr(prepare, "_scingestor_layouts", False):
        return

    def prepare_font(self: Any, font_prop: Any) -> Any:
        font = prepare(self, font_prop)
        return _LayoutMemory(font, (font_prop.get_size_in_points(), self.dpi))

    prepare_font._scingestor_layouts = True  # type: ignore[attr-defined]
    RendererAgg._prepare_font = prepare_font  # type: ignore[method-assign]


class _LayoutMemory:
    """An FT2Font as the Agg renderer prepared it, whose ``_layout`` is remembered."""

    __slots__ = ("_font", "_size")

    def __init__(self, font: Any, size: Tuple[float, float]) -> None:
        self._font = font
        self._size = size

    def _layout(self, text: str, *args: Any, **kwargs: Any) -> Any:
        try:
            key = (id(self._font), self._size, text, args, tuple(sorted(kwargs.items())))
            known = _layouts.get(key)
        except TypeError:  # an option that is not hashable (a list): not remembered
            return self._font._layout(text, *args, **kwargs)
        if known is None:
            if len(_layouts) >= _LAYOUTS:
                _layouts.clear()
            # the font is kept with its layout, so its id is not taken by another
            known = _layouts[key] = (self._font, list(self._font._layout(text, *args, **kwargs)))
        return known[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._font, name)


def _no_redraw(self: object, *args: object, **kwargs: object) -> None:
    """``draw_idle`` of a canvas nobody looks at."""


def _shared_renderer(self: Any) -> Any:
    """``FigureCanvasAgg.get_renderer``, with one renderer per size for the worker."""
    from matplotlib.backends.backend_agg import RendererAgg

    width, height = self.get_width_height(physical=True)
    key = (width, height, self.figure.dpi)
    renderer = _renderers.get(key)
    if renderer is None:
        if len(_renderers) >= _RENDERER_SIZES:
            _renderers.clear()
        renderer = _renderers[key] = RendererAgg(width, height, self.figure.dpi)
    self.renderer, self._lastKey = renderer, key
    return renderer


#: the fork server's environment names the main script the workers would run again
MAIN_PATH_VARIABLE = "SCINGESTOR_FORKSERVER_MAIN_PATH"


def preload_modules() -> List[str]:
    """:data:`PRELOAD`, and what spares the workers the program's main script.

    multiprocessing runs the program's main script again in every worker it
    starts (``scicat_dataset_ingest`` imports the whole batch tool, about
    0.1 s; the Tango server imports tango), though a worker only runs
    :func:`execute`.  When the program is a script run by its path (the
    console scripts), its path is handed to the fork server
    (:data:`MAIN_PATH_VARIABLE`), which names its own ``__main__`` after
    it (:func:`adopt_main_path`): multiprocessing then takes the script
    as run already and the workers skip it.  Otherwise (``python -m``) the
    module of the script's ``main`` is imported by the fork server, so
    running it again costs a worker nothing.
    """
    main_module = sys.modules.get("__main__")
    main = getattr(main_module, "main", None)
    module = getattr(main, "__module__", None)
    if not (isinstance(module, str) and module.split(".")[0] in _OWN_PACKAGES):
        return list(PRELOAD)
    path = _main_path(main_module)
    if path is not None:
        os.environ[MAIN_PATH_VARIABLE] = path
        return list(PRELOAD)
    return [*PRELOAD, module]


def _main_path(main_module: Any) -> Optional[str]:
    """The path multiprocessing gives its children for a script run by path, else None."""
    if getattr(getattr(main_module, "__spec__", None), "name", None) is not None:
        return None
    path = getattr(main_module, "__file__", None)
    if not isinstance(path, str):
        return None
    from multiprocessing import process

    original_dir = getattr(process, "ORIGINAL_DIR", None)  # not in the stubs
    if not os.path.isabs(path) and original_dir is not None:
        path = os.path.join(original_dir, path)
    return os.path.normpath(path)


def adopt_main_path() -> None:
    """In the fork server: take the program's main script as run (see :func:`preload_modules`)."""
    path = os.environ.pop(MAIN_PATH_VARIABLE, None)
    main_module = sys.modules.get("__main__")
    if path and main_module is not None and getattr(main_module, "__file__", None) is None:
        main_module.__file__ = path


def _ready() -> int:
    """A no-op task: makes the pool fork a worker now; the worker's pid."""
    return os.getpid()


def execute(argv: Sequence[str]) -> Tuple[int, str, str]:
    """Run one ``nxsfileinfo`` command line here; (exit code, stdout, stderr)."""
    from nxstools import nxsfileinfo

    _fix_nxstools()
    if "attachment" in argv[1:]:
        _plotting()
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [PROGRAM, *argv[1:]]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                nxsfileinfo.main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if not isinstance(stop.code, (int, type(None))):
                    err.write(f"{stop.code}\n")
            except BaseException:  # a crash in nxstools: report it like the program would
                code = 1
                err.write(traceback.format_exc())
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


class InProcessRunner:
    """A pool of nxstools worker processes, created on first use."""

    def __init__(self, workers: int = 2, tasks_per_worker: int = TASKS_PER_WORKER) -> None:
        self.workers = max(1, workers)
        self.tasks_per_worker = max(1, tasks_per_worker)
        self._pool: Optional[ProcessPoolExecutor] = None
        self._tasks = 0
        #: counts close() calls: a start() overtaken by a close() starts nothing
        self._generation = 0
        self._lock = threading.Lock()

    def _executor(
        self, task: bool = False, generation: Optional[int] = None
    ) -> Optional[ProcessPoolExecutor]:
        """The current pool; a new one after ``tasks_per_worker`` commands per worker.

        The pool as a whole is replaced (its workers finish what they hold,
        then exit) rather than using ``max_tasks_per_child``: with that,
        Python 3.11's pool stops replacing workers that retire and the next
        command waits forever.
        """
        with self._lock:
            if generation is not None and generation != self._generation:
                return None
            if self._pool is not None and self._tasks >= self.tasks_per_worker * self.workers:
                retired, self._pool = self._pool, None
                retired.shutdown(wait=False)
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(preload_modules())
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=_preload, initargs=(os.getpid(),)
                )
                self._tasks = 0
            if task:
                self._tasks += 1
            return self._pool

    def start(self) -> None:
        """Start the fork server and the workers now, in the background.

        Called when the daemon or a batch starts, so the first scan finds
        the workers ready (nxstools imported) instead of waiting for them:
        starting them takes the fork server's imports, about 0.3-1 s.
        """
        threading.Thread(
            target=self._start, args=(self._generation,), name="start-nxstools-workers", daemon=True
        ).start()

    def _start(self, generation: int) -> None:
        try:
            pool = self._executor(generation=generation)
            if pool is None:  # closed meanwhile
                return
            # one pending task per worker: the pool forks them all now
            for future in [pool.submit(_ready) for _ in range(self.workers)]:
                future.result()
        except Exception as error:  # the first command reports it (or falls back)
            logger.debug("nxstools workers did not start in advance: %s", error)

    def run(self, argv: Sequence[str], timeout: Optional[float] = None) -> Tuple[int, str, str]:
        """Execute *argv* in a worker; a broken pool is replaced once."""
        for attempt in range(2):
            pool = self._executor(task=True)
            assert pool is not None
            future = pool.submit(execute, list(argv))
            try:
                return future.result(timeout)
            except FuturesTimeout:
                # the caller runs the command as a process instead: this run must
                # not happen too, or write its output late (a waiting one is
                # cancelled; a running one is stopped with its workers)
                if not future.cancel():
                    logger.warning("nxstools worker exceeded %s s; starting new workers", timeout)
                    self._discard(pool, terminate=True)
                raise
            except BrokenProcessPool:
                logger.warning("nxstools worker died; starting new workers")
                self._discard(pool)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _discard(self, pool: ProcessPoolExecutor, terminate: bool = False) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        # the pool's worker processes (a private attribute, read before shutdown
        # drops it): a stuck worker never ends by itself
        workers = list((getattr(pool, "_processes", None) or {}).values()) if terminate else []
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._generation += 1
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
