"""scripts/promotion.py as a process against moto's S3: a commit goes to staging only after dev recorded its smoke test,
and to prod only after staging did. Who may write which record is tested with the roles (tests/test_ci_roles.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from rehearsal.engine import REPO
from scripts.promotion import PROMOTED_FROM, record_key
from tests.backup_support import s3_of

PROMOTION = REPO / "scripts" / "promotion.py"
COMMIT = "4f2a9c0de1b2c3d4e5f60718293a4b5c6d7e8f90"


def promotion(env: dict[str, str], bucket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROMOTION), *args, "--backend-url", f"s3://{bucket}?region=eu-west-1&awssdk=v2"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_a_commit_climbs_the_chain_one_passed_stack_at_a_time(aws_env: dict[str, str], bucket: str) -> None:
    assert PROMOTED_FROM == {"staging": "dev", "prod": "staging"}
    to_prod = promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", COMMIT)
    assert to_prod.returncode == 1
    assert to_prod.stderr.strip() == (f"promotion: refused: commit {COMMIT[:12]} has not passed staging's smoke test "
                                      f"(no s3://{bucket}/promotions/staging/{COMMIT}.json): deploy it to staging first")
    # dev passes: the commit may go to staging, still not to prod.
    recorded = promotion(aws_env, bucket, "record", "--stack", "dev", "--commit", COMMIT, "--run-url", "https://ci/run/1")
    assert recorded.returncode == 0, recorded.stderr
    assert promotion(aws_env, bucket, "check", "--stack", "staging", "--commit", COMMIT).returncode == 0
    assert promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", COMMIT).returncode == 1
    # staging passes: now prod takes it, and says where the evidence is.
    assert promotion(aws_env, bucket, "record", "--stack", "staging", "--commit", COMMIT, "--run-url", "https://ci/run/2").returncode == 0
    allowed = promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", COMMIT)
    assert allowed.returncode == 0
    assert f"commit {COMMIT[:12]} passed staging's smoke test at " in allowed.stderr and "(https://ci/run/2)" in allowed.stderr
    document = json.loads(s3_of(aws_env).get_object(Bucket=bucket, Key=record_key("staging", COMMIT))["Body"].read())
    assert document["commit"] == COMMIT and document["smoke"] == "passed"
    # Another commit is not carried along by the first one's records.
    other = promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", "f" * 40)
    assert other.returncode == 1 and "has not passed staging's smoke test" in other.stderr


def test_a_record_that_does_not_say_passed_for_this_commit_is_refused(aws_env: dict[str, str], bucket: str) -> None:
    s3_of(aws_env).put_object(Bucket=bucket, Key=record_key("staging", COMMIT),
                              Body=json.dumps({"commit": "a" * 40, "smoke": "passed"}).encode())
    refused = promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", COMMIT)
    assert refused.returncode == 1 and "does not record a passed smoke test" in refused.stderr


def test_dev_is_first_in_the_chain(aws_env: dict[str, str], bucket: str) -> None:
    first = promotion(aws_env, bucket, "check", "--stack", "dev", "--commit", COMMIT)
    assert first.returncode == 0 and "dev takes any commit" in first.stderr


def test_bad_usage_is_one_line_and_exit_2(aws_env: dict[str, str], bucket: str) -> None:
    short = promotion(aws_env, bucket, "check", "--stack", "prod", "--commit", "4f2a9c0")
    assert short.returncode == 2 and short.stderr.strip() == "promotion: --commit '4f2a9c0' is not a full 40-character lowercase SHA"
    wrong = subprocess.run([sys.executable, str(PROMOTION), "check", "--stack", "prod", "--commit", COMMIT, "--backend-url",
                            "file:///tmp/state"], capture_output=True, text=True, env=aws_env, check=False)
    assert wrong.returncode == 2 and "is not an s3:// state backend URL" in wrong.stderr
    shown = subprocess.run([sys.executable, str(PROMOTION), "--help"], capture_output=True, text=True, check=True).stdout
    assert "dev -> staging -> prod" in shown and "Exit codes" in shown
