"""Which engine failures are only bad timing, and worth trying again."""

from __future__ import annotations

from shipit.daemon.delta import _vanishing

# As Docker 26 on the containerd store answered an image list while a concurrent ship
# deleted its probe image.
RACE = (
    "500 Server Error for http+docker://localhost/v1.45/images/json?all=1: Internal Server "
    'Error ("failed to calculate size of image shipit-probe.invalid/probe:1796138978-6e32b7: '
    "failed to get rootfs of image shipit-probe.invalid/probe:1796138978-6e32b7: rpc error: "
    'code = NotFound desc = content digest sha256:301540da2a9c: not found")'
)


def test_an_image_deleted_during_the_list_is_timing():
    assert _vanishing(Exception(RACE))
    # the same race caught while the engine reads the image's config
    assert _vanishing(
        Exception(
            '500 Server Error: Internal Server Error ("failed to read config content: '
            'content digest sha256:a4e5cbe32910: not found")'
        )
    )


def test_other_list_failures_are_not():
    assert not _vanishing(Exception('500 Server Error: Internal Server Error ("no space left")'))
    assert not _vanishing(Exception('404 Client Error: Not Found ("page not found")'))
    assert not _vanishing(Exception("failed to calculate size of image x: permission denied"))
