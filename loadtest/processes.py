"""Child processes of the load tests (Gunicorn, nginx): stopped gracefully, then for good."""

import signal
import subprocess


def stop_gracefully(process: subprocess.Popen, how: int = signal.SIGTERM, timeout: float = 40):
    """Send ``how`` (the process's graceful-shutdown signal) and wait ``timeout`` seconds,
    then kill it. Does nothing for a process that has exited."""
    if process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
