"""The real download code against mirrors served from 127.0.0.1 and local folders."""

import functools
import json
import http.server
import shutil
import threading
import time

import pytest
import torch
import yaml

from mnistcnn import cli
from mnistcnn.data import mirrors as download, mnist
from mnistcnn.outputs import DataError
from mnistcnn.params import config
from stages import download as download_stage
from tests.conftest import FILE_NAMES, params_for, synthetic_split

pytestmark = pytest.mark.unit  # the fast tier: make test-fast


@pytest.fixture
def serve(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; returns a function folder -> base URL."""
    servers = []

    def start(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def typed_params(digests, mirrors):
    return config.parse(params_for(digests, mirrors))


def test_mirror_env_goes_first_and_is_not_tried_twice():
    assert download.sources(("a", "b"), {"MNIST_MIRROR": "b"}) == ["b", "a"]
    assert download.sources(("a", "b"), {}) == ["a", "b"]


def test_download_from_a_local_http_mirror_decodes_every_file(mnist_dir, serve, tmp_path):
    folder, digests = mnist_dir
    raw = tmp_path / "raw"
    raw.mkdir()
    dataset, provenance, _ = download.download(typed_params(digests, [serve(folder)]), {}, raw)
    assert dataset["train_images"].shape == (600, 28, 28) and dataset["test_labels"].shape == (200,)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FILE_NAMES.values())
    assert provenance["train_samples"] == 600 and provenance["test_samples"] == 200
    assert {f["sha256"] for f in provenance["files"].values()} == set(digests.values())


def test_a_missing_or_corrupt_file_falls_back_to_the_next_mirror(mnist_dir, serve, tmp_path):
    folder, digests = mnist_dir
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / FILE_NAMES["train_labels"]).unlink()  # 404 on the first mirror
    (broken / FILE_NAMES["test_images"]).write_bytes(b"\x1f\x8b garbage")  # corrupt gzip
    first, second = serve(broken), serve(folder)
    raw = tmp_path / "raw"
    raw.mkdir()
    _, provenance, sources = download.download(typed_params(digests, [first, second]), {}, raw)
    assert "source" not in json.dumps(provenance)  # what the data is, not where it came from
    assert sources == {"train_images": first, "train_labels": second, "test_images": second, "test_labels": first}


def test_content_that_fails_its_checksum_is_rejected(mnist_dir, tmp_path):
    folder, digests = mnist_dir
    wrong = dict(digests, test_labels="0" * 64)
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(download.DownloadError, match=r"t10k-labels-idx1-ubyte.gz: no source.*\n.*content sha256"):
        download.download(typed_params(wrong, [str(folder)]), {}, raw)


def test_all_mirrors_failing_names_each_mirror_and_why(mnist_dir, serve, tmp_path):
    folder, digests = mnist_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    http_mirror = serve(empty)
    closed = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    with pytest.raises(download.DownloadError) as err:
        download.fetch_verified(typed_params(digests, [http_mirror]).download.files.train_images,
                                [str(empty), http_mirror, closed], timeout=5)
    message = str(err.value)
    assert f"{empty}: file not found" in message
    assert f"{http_mirror}: HTTP 404" in message
    assert f"{closed}: unreachable" in message


def run_stage(stage, repo, monkeypatch, env=None):
    """Run a stage's main() in `repo` as DVC would, returning its exit code."""
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(stage.main)
    return exit_info.value.code


def test_stage_fails_cleanly_and_leaves_no_output_when_every_mirror_fails(mnist_dir, tmp_path, monkeypatch, capsys):
    folder, digests = mnist_dir
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(params_for(digests, ["http://127.0.0.1:9/"])))
    (folder / FILE_NAMES["test_images"]).write_bytes(b"corrupt")
    code = run_stage(download_stage, repo, monkeypatch, env={"MNIST_MIRROR": str(folder)})
    assert code == 1
    assert "t10k-images-idx3-ubyte.gz: no source gave a valid copy" in capsys.readouterr().err
    assert not (repo / "data").exists() or not any((repo / "data").iterdir())


def test_stage_writes_its_outputs_from_the_mirror_env(mnist_dir, tmp_path, monkeypatch):
    folder, digests = mnist_dir
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(params_for(digests, ["http://127.0.0.1:9/"])))
    assert run_stage(download_stage, repo, monkeypatch, env={"MNIST_MIRROR": str(folder)}) == 0
    provenance = json.loads((repo / "data/provenance.json").read_text())
    test = mnist.load_split(repo / "data/test.pt", "test", provenance, "provenance.json")
    images, labels = synthetic_split(200, seed=2)  # how conftest made the test split
    assert torch.equal(test["test_images"], images) and torch.equal(test["test_labels"], labels.long())
    train = mnist.load_split(repo / "data/train.pt", "train", provenance, "provenance.json")
    assert set(train) == {"train_images", "train_labels"} and len(train["train_labels"]) == 600
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == sorted(FILE_NAMES.values())
    assert sorted(p.name for p in (repo / "data").iterdir()) == ["provenance.json", "raw", "test.pt", "train.pt"]


def test_bad_params_stop_the_stage_before_any_download(tmp_path, monkeypatch, capsys, mnist_dir):
    folder, digests = mnist_dir
    repo = tmp_path / "repo"
    repo.mkdir()
    bad = params_for(digests, [str(folder)], lr=-1)
    (repo / "params.yaml").write_text(yaml.safe_dump(bad))
    assert run_stage(download_stage, repo, monkeypatch) == 1
    assert "params.yaml: train.lr = -1: must be a positive number" in capsys.readouterr().err
    assert not (repo / "data").exists()


@pytest.mark.parametrize("raw", [".", "../neighbour", "stages"])
def test_a_raw_path_outside_the_stage_s_own_folder_is_refused_and_nothing_is_deleted(
        raw, mnist_dir, tmp_path, monkeypatch, capsys):
    folder, digests = mnist_dir
    repo = tmp_path / "repo"
    (repo / "stages").mkdir(parents=True)
    (tmp_path / "neighbour").mkdir()
    keep = [repo / "stages/keep.py", tmp_path / "neighbour/keep.txt", repo / "notes.txt"]
    for path in keep:
        path.write_text("precious")
    params = params_for(digests, [str(folder)])
    params["paths"]["raw"] = raw
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(download_stage, repo, monkeypatch) == 1
    assert f"paths.raw = '{raw}'" in capsys.readouterr().err
    assert all(path.read_text() == "precious" for path in keep)
    assert sorted(p.name for p in repo.iterdir()) == ["notes.txt", "params.yaml", "stages"]


def test_a_mirror_file_over_the_size_limit_is_refused(mnist_dir, serve):
    folder, _ = mnist_dir
    name = FILE_NAMES["train_images"]
    size = (folder / name).stat().st_size
    for source in (str(folder), serve(folder)):
        assert len(download.fetch(source, name, timeout=5, limit=size)) == size
        with pytest.raises(DataError, match=f"larger than {size - 1:,} bytes: refused"):
            download.fetch(source, name, timeout=5, limit=size - 1)


def test_the_timeout_bounds_the_whole_file_not_each_read(tmp_path):
    """A mirror that sends a byte every 0.2 s never lets a read wait 1 s, yet the file takes forever."""

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the client gave up, as it should

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="not complete within 1 s|timed out"):
            download.fetch(f"http://127.0.0.1:{server.server_address[1]}/", "x.gz", timeout=1)
        assert time.monotonic() - start < 2
    finally:
        server.shutdown()
        server.server_close()
