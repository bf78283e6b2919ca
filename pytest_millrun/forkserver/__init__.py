"""Fresh Jupyter kernels at fork speed: a kernel provisioner that forks from a warm template.

Why: most of a small notebook's papermill run is kernel boot -- starting
Python and importing ipykernel, IPython, zmq, tornado and debugpy -- repeated
identically for every variation.  A *template* process pays those imports
once; each kernel is then an ``os.fork()`` of it that runs
``ipykernel_launcher``'s own entry point and answers its first request
several times sooner.

How it fits in: :class:`ForkProvisioner` is an ordinary jupyter_client kernel
provisioner (a :class:`~jupyter_client.provisioning.LocalProvisioner` whose
``launch_kernel`` asks the template instead of ``subprocess.Popen``), so the
kernel manager, nbclient and papermill work unchanged.  A kernel manager
installs it with ``self.provisioner = make_provisioner(self)`` before
``super()._async_pre_start_kernel()`` when :func:`fork_available` says the
kernelspec runs ``ipykernel_launcher`` on this very interpreter.

Process tree and lifetimes::

    parent (pytest worker / CLI worker) ── template (one per parent pid, lazy)
                                              ├── kernel (own session, fork of template)
                                              └── kernel ...

* The template is spawned with ``sys.executable -c <bootstrap>``; it talks to
  its parent over an inherited Unix socketpair (never a TCP port, nothing on
  disk), stays single-threaded, reaps its children between requests, and
  exits when the socket reaches EOF or its parent pid changes.  It is shut
  down at the parent's exit (``atexit``).
* A kernel cannot be waited for by the parent (it is a grandchild), so the
  template sends back a *pidfd* for it over the socket (``SCM_RIGHTS``): the
  parent polls it for exit and signals through it without pid-reuse races,
  and asks the template for the exit status.  Each kernel also has
  ``PR_SET_PDEATHSIG=SIGKILL`` towards the template, so the chain "parent
  dies -> template exits -> kernels die" holds even for a SIGKILLed template.
* The child makes itself indistinguishable from a spawned kernel: new session,
  cwd, umask, environment (``os.environ`` and the ``/proc`` environ block),
  stdio (stdin a closed pipe, stdout/stderr the descriptors the manager
  passed, sent over the socket), no inherited descriptors beyond 0/1/2,
  reseeded ``random``/``numpy.random``, ``sys.argv``/``sys.orig_argv`` and
  ``/proc/<pid>/cmdline`` as ``python -m ipykernel_launcher -f <connection
  file>`` (so process-table tools such as ``pgrep -f ipykernel`` still find
  it), and then does what ``ipykernel.kernelapp.launch_new_instance()`` does
  for the launcher, returning through the bootstrap so that interpreter
  shutdown (atexit, flushing) is the normal one.
* The template's objects sit in the collector's permanent generation
  (``gc.freeze()``) while a kernel initialises, and are thawed before it runs
  any user code.
* Inside :func:`spare_kernels` (a pytest session, a run, a pool worker's life)
  each launch also forks the *next* kernel in the background, with its own
  connection file and folder; the next launch adopts it only if command line,
  environment and working directory match exactly (the caller can announce
  them with :func:`expect_next_launch`), else discards it.  A spare has run no
  code, so it is as fresh as a kernel forked on demand.
* ``launch_kernel`` returns once the kernel listens on its ports (a few tens
  of milliseconds), so the client's first connection succeeds instead of
  waiting out ZeroMQ's reconnect interval.

Known differences from a spawned kernel, inherent to fork: ``os.getppid()`` is
the template; the str-hash secret (``PYTHONHASHSEED`` randomisation) is shared
by the kernels of one template; modules imported in the template read their
import-time configuration from the template's environment -- templates are
therefore keyed by the variables that matter (``PYTHON*``, locale,
``*_NUM_THREADS``, ``HOME``, ``IPYTHON*``, ``JUPYTER*``, ``PYDEVD_*``...), and
the known import-time reads of ipykernel are redone in each kernel; resource
limits and ignored signals are the parent's as of the template's start.
Stopping a template (:func:`shutdown_templates`, parent exit) ends the kernels
still running from it, as a spawned kernel ends when its manager's process dies.

Modules, by the process they run in (imports go down this list, never up)::

    provisioner  parent            the jupyter_client provisioner, fork_available
    spares       parent            kernels forked one launch ahead
    templates    parent            this process's templates: start, reuse, give up, stop
    client       parent            handles on one template and on one forked kernel
    bootstrap    parent            the template's program (its source), with its imports
    command      parent            which kernel commands a template can run
    template     template          entry point, request loop, the fork
    child        forked kernel     the child's set-up until it is ipykernel
    proctitle    template, kernel  /proc command line and environment
    protocol     parent, template  framed messages and descriptor passing

The template-side modules use the standard library only: the template imports
them without ``pytest_millrun`` (see :data:`.bootstrap.BOOTSTRAP`).
"""

from __future__ import annotations

from .client import ForkedKernel, ForkUnavailable, TemplateInfo
from .provisioner import ForkProvisioner, fork_available, make_provisioner
from .spares import discard_spare, expect_next_launch, spare_kernels
from .template_registry import shutdown_templates, start_template

__all__ = [
    "ForkProvisioner",
    "ForkUnavailable",
    "ForkedKernel",
    "TemplateInfo",
    "discard_spare",
    "expect_next_launch",
    "fork_available",
    "make_provisioner",
    "shutdown_templates",
    "spare_kernels",
    "start_template",
]
