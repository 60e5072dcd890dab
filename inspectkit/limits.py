"""What the server accepts and how requests queue: upload and batch limits, wait times, Gradio's poll
intervals, and the fair lock every inspection takes (one network at a time, first come first served).
"""

import collections
import threading

#: Largest image file accepted (UI upload and JSON endpoint). A 300x300 line-camera JPEG is ~10 KB;
#: 20 MB leaves room for 20-megapixel PNGs while keeping a batch's memory bounded.
MAX_UPLOAD_MB = 20


MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024


#: Most images inspected in one batch: ~32 x 0.1 s on a 2-core Space keeps a batch under a few seconds and the
#: per-session state (display images and heat maps) small.
MAX_BATCH = 32


#: How long a request waits for the model that is still loading before it is told to try again.
MODEL_WAIT_S = 300.0


#: Longest file name we show; longer names keep their start and their extension.
MAX_NAME_CHARS = 96


#: POST /api/inspect requests allowed to wait for the model at once; more are told "busy" (503 + Retry-After)
#: at once instead of hanging: on two cores 8 waiting images are already ~1 s of work.
MAX_API_WAITING = 8


#: Multipart overhead allowed on top of MAX_UPLOAD_BYTES before a request body is refused unread.
BODY_SLACK_BYTES = 64 * 1024


#: How often Gradio's queue looks for a new job, and for progress to send, in seconds. Gradio polls every 1 ms
#: (10 ms for progress) on Linux: an idle server woke ~800 times a second and used 6-8 % of a core, and while
#: the network runs on two intra-op threads over two cores, each wake-up takes a core from one of them and the
#: other waits at the next barrier. 10 ms adds at most that to the start of a queued job (117 wake-ups/s, 2.3 %).
QUEUE_POLL_S = 0.01


PROGRESS_POLL_S = 0.05


class FairLock:
    """A lock handed to its waiters in arrival order.

    ``threading.Lock`` promises no order: any waiter may win, and the thread that just released it can take it
    straight back, so a burst of JSON requests could keep the Gradio worker waiting. Here ``release`` passes
    ownership directly to the longest waiter, so nobody can barge in between.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: collections.deque = collections.deque()

    def acquire(self) -> bool:
        """Wait for the lock, behind everyone who asked before."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        try:
            turn.acquire()  # released by release(), which has already made us the owner
        except BaseException:
            with self._mutex:
                if turn in self._waiters:
                    self._waiters.remove(turn)
                else:  # ownership reached us as we were interrupted: pass it on, or the queue would stall
                    self._hand_over()
            raise
        return True

    def release(self) -> None:
        """Pass the lock to the longest waiter, or free it."""
        with self._mutex:
            if not self._held:
                raise RuntimeError("release of a FairLock that is not held")
            self._hand_over()

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft().release()  # stays held: the waiter owns it now
        else:
            self._held = False

    def locked(self) -> bool:
        """Whether someone holds the lock."""
        with self._mutex:
            return self._held

    def waiting(self) -> int:
        """How many threads are waiting for the lock."""
        with self._mutex:
            return len(self._waiters)

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# One forward pass at a time: torch already spreads one pass over all cores, and the Gradio queue and the
# JSON endpoint would otherwise run passes side by side and slow each other down. First come, first served.
INFERENCE_LOCK = FairLock()

#: Files the Adapt tab writes (adapted checkpoints, copies of uploads) are removed after this long.
KEEP_FILES_S = 24 * 3600
