"""Pure Queue Monitor rules: error normalisation and grouping, payload redaction, summary matrix."""
from lib.core.redact import REDACTED, redact
from lib.queue.rules import group_errors, normalize_error, summary_matrix


def test_normalize_error_merges_rows_that_differ_only_by_ids_and_numbers():
    a = normalize_error("(#100) Invalid parameter: comment 17895695668004550 does not exist")
    b = normalize_error("(#100)  Invalid parameter: comment 17841400000000001 does not exist")
    assert a == b == "(#100) Invalid parameter: comment # does not exist"
    assert normalize_error("Media 'abc def' not found for 3f2b1c9e-0d4a-4e1b-9a57-2f1e0c3d4b5a") == \
        "Media '…' not found for <id>"
    assert normalize_error(None) == "(no error text)"
    assert normalize_error("(#190) Error validating access token") != normalize_error("(#4) Application request limit reached")


def test_group_errors_counts_by_category_and_normalised_text_biggest_first():
    rows = [
        ("auth_failure", "(#190) Error validating access token: session 1 expired", 100),
        ("auth_failure", "(#190) Error validating access token: session 2 expired", 112),
        ("permanent", "(#100) Invalid parameter", 7),
        (None, None, 1),
    ]
    groups = group_errors(rows)
    assert [(g["error_category"], g["count"]) for g in groups] == [("auth_failure", 212), ("permanent", 7), ("(none)", 1)]
    assert groups[0]["error_group"] == "(#190) Error validating access token: session # expired"
    assert len(groups[0]["errors"]) == 2  # the raw texts, to filter the table by the group
    assert groups[2]["errors"] == ()


def test_redact_hides_token_like_fields_and_values_but_keeps_the_rest():
    payload = {
        "comment_id": "c1",
        "reply_text": "thanks!",
        "access_token": "EAAB" + "z" * 50,
        "nested": {"client_secret": "s3cr3t", "Authorization": "Bearer abc.def", "page_token": "x", "count": 3},
        "list": [{"refresh_token": "r"}, "EAAG" + "q" * 30],
        "image_url": "https://cdn.example/x.jpg?access_token=EAAtoken123&size=2",
        "empty_token": None,
    }
    out = redact(payload)
    assert out["comment_id"] == "c1" and out["reply_text"] == "thanks!"
    assert out["access_token"] == REDACTED
    assert out["nested"] == {"client_secret": REDACTED, "Authorization": REDACTED, "page_token": REDACTED, "count": 3}
    assert out["list"] == [{"refresh_token": REDACTED}, REDACTED]
    assert out["image_url"] == f"https://cdn.example/x.jpg?access_token={REDACTED}&size=2"
    assert out["empty_token"] is None
    assert "EAA" not in str(out)
    assert payload["access_token"].startswith("EAAB")  # the input is not modified
    assert redact(None) is None and redact([1, "a"]) == [1, "a"]


def test_summary_matrix_keeps_spec_order_and_unknown_names():
    actions, statuses, cells = summary_matrix({"publish_post::dlq": 2, "reply_dm::pending": 3, "custom::weird": 1})
    assert actions[:5] == ["reply_comment", "reply_dm", "send_dm", "publish_post", "repost_ugc"]
    assert actions[-1] == "custom" and statuses[-1] == "weird"
    assert cells[("publish_post", "dlq")] == 2 and cells[("custom", "weird")] == 1
