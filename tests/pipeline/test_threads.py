"""The library called from two threads at once (a web app, a notebook's executor): the
warning filters it quiets for a moment are the process's, and must come back as they were."""

from __future__ import annotations

import threading
import warnings

from geo_hires.errors import LevelSkippedWarning, NoCRSWarning, quiet, warn


def test_quiet_blocks_of_two_threads_leave_the_filters_as_they_were():
    """With ``warnings.catch_warnings`` alone, the second thread's block saved the first's
    filter and put it back after the first had removed it: installed for good (one detect in
    two threads did so in one run of two). Another library's warning can only be filtered:
    those blocks take turns."""
    before = list(warnings.filters)
    first_inside, second_inside, first_out = (threading.Event() for _ in range(3))

    def first() -> None:
        with quiet(UserWarning, message="'crs' was not provided"):
            first_inside.set()
            second_inside.wait(1.0)  # in vain: the second's block waits for this one's end
        first_out.set()

    def second() -> None:
        first_inside.wait(5.0)
        with quiet(DeprecationWarning, message="old"):
            second_inside.set()
            first_out.wait(5.0)  # without turns: the first ends inside this block

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before


def test_our_warnings_are_quieted_for_one_thread_only():
    """A filter hid a thread's warning from every other thread while its block ran (another
    scene's skipped level, its missing CRS): geo_hires' own are silenced per thread, and no
    filter is touched."""
    inside, said = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def quiet_one() -> None:
        try:
            before = list(warnings.filters)
            with quiet(NoCRSWarning), quiet(LevelSkippedWarning):
                warn("not said", NoCRSWarning)
                inside.set()
                said.wait(5.0)
                assert warnings.filters == before  # nothing process-wide
        except BaseException as exc:  # a thread's failure is not the test's otherwise
            failed.append(exc)
            inside.set()

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        thread = threading.Thread(target=quiet_one)
        thread.start()
        inside.wait(5.0)
        warn("said", NoCRSWarning)  # this thread is not quiet
        said.set()
        thread.join()
    assert not failed
    assert [(str(w.message), w.category, w.filename) for w in seen] == [
        ("said", NoCRSWarning, __file__)]  # fmt: skip  # pointing at its caller


def test_quiet_ignores_its_category_and_message_only():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(UserWarning, message="'crs' was not provided"):
            warnings.warn("'crs' was not provided here", UserWarning, stacklevel=1)
            warnings.warn("another", UserWarning, stacklevel=1)
            warnings.warn("a CRS", NoCRSWarning, stacklevel=1)  # a UserWarning: this text passes
    assert [str(w.message) for w in seen] == ["another", "a CRS"]


def test_two_threads_detect_what_one_does_and_leave_the_filters(demo_crop):
    """A web app calls the library from its thread pool: two scenes at once give the bytes
    each gives alone, with the process's warning filters as they were."""
    from concurrent.futures import ThreadPoolExecutor

    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    bundle = load_bundle("aircraft_lsn")
    scenes = [open_scene(demo_crop(4096, 1024, 512, 512)), open_scene(demo_crop(0, 1024, 512, 512))]
    alone = [detect_scene(s, bundle).detections.boxes.tobytes() for s in scenes]
    before = list(warnings.filters)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda s: detect_scene(s, bundle).detections.boxes.tobytes(),
                                 scenes * 3))  # fmt: skip
    assert together == alone * 3 and all(len(b) for b in alone)
    assert warnings.filters == before
