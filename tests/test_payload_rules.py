"""lib.instagram.payload_rules: what a payload must hold before any Graph call (pure)."""
import pytest

from lib.instagram.payload_rules import CAPTION_MAX_CHARS, InvalidPayload, dm_problems, media_spec, payload_problems


def test_image_reels_video_stories_specs():
    assert media_spec("publish_post", {"image_url": "https://x/a.jpg", "caption": "hi"}) \
        .fields == {"image_url": "https://x/a.jpg", "caption": "hi"}
    reel = media_spec("publish_post", {"media_type": "REELS", "video_url": "https://x/a.mp4"})
    assert (reel.kind, reel.fields) == ("REELS", {"media_type": "REELS", "video_url": "https://x/a.mp4"})
    video = media_spec("publish_post", {"media_type": "VIDEO", "video_url": "https://x/a.mp4"})
    assert (video.kind, video.fields["media_type"]) == ("REELS", "REELS")  # VIDEO is sent as REELS
    story = media_spec("publish_post", {"media_type": "STORIES", "video_url": "https://x/s.mp4", "caption": "c"})
    assert story.fields == {"media_type": "STORIES", "video_url": "https://x/s.mp4"}  # stories take no caption
    assert media_spec("publish_post", {"media_type": "stories", "image_url": "https://x/s.jpg"}).fields == \
        {"media_type": "STORIES", "image_url": "https://x/s.jpg"}


def test_carousel_items_and_parent():
    spec = media_spec("publish_post", {"media_type": "CAROUSEL_ALBUM", "caption": "two",
                                       "children": [{"image_url": "https://x/1.jpg"}, {"video_url": "https://x/2.mp4"}]})
    assert spec.kind == "CAROUSEL" and spec.fields == {"media_type": "CAROUSEL", "caption": "two"}
    assert spec.children == (
        ("https://x/1.jpg", {"image_url": "https://x/1.jpg", "is_carousel_item": "true"}),
        ("https://x/2.mp4", {"media_type": "VIDEO", "video_url": "https://x/2.mp4", "is_carousel_item": "true"}))


@pytest.mark.parametrize("payload, words", [
    ({"media_type": "CAROUSEL_ALBUM", "image_url": "https://x/1.jpg"}, "children"),  # never one image instead
    ({"media_type": "CAROUSEL", "children": [{"image_url": "https://x/1.jpg"}]}, "2 to 10"),
    ({"media_type": "CAROUSEL", "children": [{"image_url": "https://x/1.jpg"}] * 11}, "got 11"),
    ({"media_type": "CAROUSEL", "children": ["https://x/1.jpg", "https://x/2.jpg"]}, "item 1 needs"),
    ({"media_type": "REELS", "image_url": "https://x/1.jpg"}, "needs video_url"),
    ({"media_type": "IGTV", "video_url": "https://x/1.mp4"}, "not one Instagram publishes"),
    ({"image_url": "ftp://x/1.jpg"}, "http(s)"),
    ({"image_url": "https://x/1.jpg", "caption": "x" * (CAPTION_MAX_CHARS + 1)}, "2,200"),
    ({"image_url": "https://x/1.jpg", "caption": " ".join(f"#t{i}" for i in range(31))}, "31 hashtags"),
    ({"image_url": "https://x/1.jpg", "caption": " ".join(f"@u{i}" for i in range(21))}, "21 @ tags"),
    ({}, "needs image_url"),
])
def test_payloads_that_cannot_be_built_are_refused_with_the_reason(payload, words):
    with pytest.raises(InvalidPayload, match=words.replace("(", r"\(").replace(")", r"\)")):
        media_spec("publish_post", payload)


def test_caption_at_the_limits_is_fine():
    caption = " ".join([f"#t{i}" for i in range(30)] + [f"@u{i}" for i in range(20)])
    assert media_spec("publish_post", {"image_url": "https://x/1.jpg", "caption": caption})


def test_dm_limit_counts_utf8_bytes():
    assert dm_problems("a" * 1000) == []
    assert dm_problems("é" * 501)  # 1,002 bytes in UTF-8 though only 501 characters
    assert "1,002 bytes" in dm_problems("é" * 501)[0]


def test_payload_problems_per_action_type():
    assert payload_problems("reply_comment", {"comment_id": "1", "reply_text": "hi"}) == []
    assert payload_problems("reply_comment", {"comment_id": "1"}) == ["payload lacks reply_text"]
    assert payload_problems("send_dm", {"recipient_id": "1", "message_text": "x" * 1001})
    assert payload_problems("reply_dm", {"message_text": "hi"}) == ["reply_dm needs conversation_id (or recipient_id)"]
    assert payload_problems("repost_ugc", {"permission_id": "p", "creation_id": "c"}) == []
    assert payload_problems("publish_post", {"creation_id": "c"}) == []  # the stored container is read first
    assert payload_problems("nope", {}) == ["unknown action_type 'nope'"]


def test_repost_takes_the_permissions_media_url():
    assert media_spec("repost_ugc", {"media_url": "https://x/ugc.jpg"}).fields == {"image_url": "https://x/ugc.jpg"}
    with pytest.raises(InvalidPayload, match="creation_id or the permission's media"):
        media_spec("repost_ugc", {"permission_id": "p"})
