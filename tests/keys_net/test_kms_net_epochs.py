"""KEK epochs that really end, on the networked KMSes (issue 18 item 2): ``forget --now`` and the
scheduled ``rotate --due`` destroy the old KEK version in OpenBao Transit and AWS KMS (moto), so
a copy of a forgotten subject's wrapped DEK taken before the forget unwraps under nothing."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from eventward._internal import demo
from eventward._internal.deployment import Deployment
from eventward._internal.home import Home
from eventward._internal.keys.epochs import EpochKeeper
from eventward._internal.keys.service import _row_aad
from eventward._internal.keys.store_base import DekRecord
from eventward.errors import KeyDestroyed, KeyNotFound

from .conftest import TOKEN_ENV


@pytest.fixture(params=["transit", "aws"])
def home(request, tmp_path, prefix, monkeypatch) -> Home:
    h = Home(tmp_path / "home")
    h.ensure()
    if request.param == "transit":
        bao = request.getfixturevalue("bao")
        monkeypatch.setenv(TOKEN_ENV, bao.token_for(prefix))
        kms = {"backend": "transit", "transit": {"url": bao.url, "token_env": TOKEN_ENV, "key_prefix": prefix,
                                                 "refresh_s": 0.0}}
    else:
        moto = request.getfixturevalue("moto")
        request.getfixturevalue("aws_env")
        kms = {"backend": "aws", "aws": {"region": "eu-west-1", "endpoint_url": moto.url, "key_prefix": prefix,
                                         "refresh_s": 0.0}}
    h.config.write_text(yaml.safe_dump({"kms": kms}))
    dep = Deployment.init(h, admin=demo.ADMIN)
    try:
        demo.setup(dep, lambda *a: None)
        demo.schemas(dep, demo.DemoResult(), lambda *a: None)
        demo.produce(dep, demo.DemoResult(), lambda *a: None)
    finally:
        dep.close()
    return h


def _copy(keys_db, kid: str) -> DekRecord:
    db = sqlite3.connect(keys_db)
    try:
        row = db.execute("SELECT kid, subject_hash, class, version, kek_id, wrapped, created, fmt FROM deks "
                         "WHERE kid = ?", (kid,)).fetchone()
    finally:
        db.close()
    return DekRecord(*row[:6], created=row[6], fmt=row[7])


def test_attack_forget_now_ends_the_epoch_in_the_network_kms(home):
    with Deployment.open(home) as dep:
        kid = dep.keys.store.current_dek(dep.keys.known_subject(demo.FORGOTTEN), "pii").kid
        copied = _copy(home.keys_db, kid)  # a backup's copy of the wrapped DEK
        r = dep.forget(demo.FORGOTTEN, principal=demo.ADMIN, close_epoch=True).receipt
        assert r.epoch_closed() and copied.kek_id in r.closed_keks and copied.kek_id not in dep.keys.kms.versions("pii")
        with pytest.raises((KeyDestroyed, KeyNotFound)):
            dep.keys.kms.unwrap(copied.kek_id, copied.wrapped, _row_aad(copied))
        seen = demo._collect(dep, demo.SHIPPING, "after").events
        assert len(seen) == 6 and sum(e.data["customer"]["name"] == "[erased]" for e in seen) == 2


def test_scheduled_rotation_ends_due_epochs_in_the_network_kms(home):
    with Deployment.open(home) as dep:
        before = dep.keys.kms.current("payment")
        dep.keys.store.set_meta_text("kek_since:payment", "0")
        done = EpochKeeper(dep.keys, max_age_days=1.0, interval=3600.0).tick()
        assert [r.cls for r in done] == ["payment"] and before in done[0].destroyed_kek_ids
        assert before not in dep.keys.kms.versions("payment") and before in dep.keys.kms.destroyed("payment")
        assert len(demo._collect(dep, demo.SHIPPING, "after").events) == 6
