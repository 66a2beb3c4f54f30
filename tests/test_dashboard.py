"""`nas dashboard`: the live study view over real studies, in HTTP and in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
import typer
from typer.testing import CliRunner

from nas.cli._dashboard import dashboard
from nas.studies import describe_study, load_study, open_storage
from nas.studies._dashboard import export_formats, index_page, make_server
from nas.studies._optuna_dashboard import optuna_dashboard_url, start_optuna_dashboard

PIXEL = "pixel3"
GOLD = "gold<&>"  # a name that must be escaped in HTML and quoted in URLs and commands
SEARCHES = {
    PIXEL: ["--hw", "pixel3", "--budget", "5ms"],
    GOLD: ["--hw", "gold6226", "--budget", "20ms"],
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else (
    shutil.which("chromedriver")
)


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """Two small real searches (random, tabular accuracy: seconds), run at once."""
    root = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{root / 's.db'}"
    open_storage(url)  # create the schema first: two processes creating it would race
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nas.cli", "search", "--supernet", "nb201", *target,
             "--evals", "12", "--algorithm", "random", "--study", name, "--storage", url],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        for name, target in SEARCHES.items()
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return url


def serving(server):
    """Serve ``server`` in a thread for a fixture's lifetime (``yield from serving(s)``)."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def server(storage):
    yield from serving(make_server(storage, port=0))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")


def _compare_url(server, *names: str) -> str:
    return server.url + "compare?" + "&".join(f"study={quote(n, safe='')}" for n in names)


def _pareto_trials(storage: str, name: str) -> list[int]:
    return [p["trial"] for p in describe_study(load_study(name, storage))["pareto"]]


def test_binds_to_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_index_lists_the_studies(server):
    status, html = _get(server.url)
    assert status == 200
    assert f'href="/compare?study={quote(PIXEL)}"' in html
    assert "gold&lt;&amp;&gt;" in html and GOLD not in html
    assert html.count('type="checkbox" name="study"') == 2
    assert "<td>nb201</td><td>pixel3</td>" in html and "<td>gold6226</td>" in html
    assert "optuna-dashboard" in html


def test_compare_shows_fronts_and_export_commands(server, storage):
    status, html = _get(_compare_url(server, PIXEL, GOLD))
    assert status == 200
    assert '<script src="/plotly.min.js"></script>' in html
    assert "https://" not in html and "cdn" not in html.lower()
    assert html.count("Plotly.newPlot") == 2  # the fronts and the hypervolume curves
    assert GOLD not in html
    for name in SEARCHES:
        for trial in _pareto_trials(storage, name):
            assert f'<tr data-trial="{trial}">' in html
    first = _pareto_trials(storage, PIXEL)[0]
    assert (f"nas export --study pixel3 --trial {first} --out exports/pixel3-trial{first} "
            f"--format {export_formats()} --storage {storage}") in html
    assert "nas export --study &#x27;gold&lt;&amp;&gt;&#x27;" in html  # shell-quoted, escaped

    status, js = _get(server.url + "plotly.min.js")
    assert status == 200 and len(js) > 1_000_000


def test_unknown_study_is_a_404_naming_the_known_ones(server):
    status, html = _get(_compare_url(server, PIXEL, "nope"))
    assert status == 404
    assert "No study &#x27;nope&#x27;" in html
    assert "Known studies: gold&lt;&amp;&gt;, pixel3." in html
    assert _get(server.url + "compare")[0] == 400
    assert _get(server.url + "elsewhere")[0] == 404


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard)
    return app


def _one_line_error(result) -> str:
    text = result.stderr if result.stderr else result.output
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, text
    assert len(lines) == 1, text
    return lines[0]


def test_port_taken_is_a_one_line_error(storage):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            _cli(), ["--storage", storage, "--port", str(port)], env={"COLUMNS": "200"}
        )
    line = _one_line_error(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line


def test_storage_that_cannot_be_opened_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    result = CliRunner().invoke(
        _cli(), ["--storage", f"sqlite:///{bad}", "--port", "0"], env={"COLUMNS": "200"}
    )
    assert "cannot open study storage" in _one_line_error(result)


needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser():
    """A headless Chromium driven by selenium, closed after the test."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,2000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _rendered_text(driver, url: str) -> str:
    """Open ``url``, wait until plotly has drawn a trace, return the page's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .trace"
    ))
    return driver.find_element(By.TAG_NAME, "body").text


def _keep_screenshot(driver, path: Path) -> None:
    """Save a screenshot as a test artifact (also under $NAS_TEST_ARTIFACTS if set)."""
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("NAS_TEST_ARTIFACTS"):
        artifacts = Path(os.environ["NAS_TEST_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, artifacts / path.name)


@needs_browser
def test_compare_renders_in_a_real_browser(server, storage, browser, tmp_path):
    from selenium.webdriver.common.by import By

    text = _rendered_text(browser, _compare_url(server, PIXEL, GOLD))
    assert PIXEL in text and GOLD in text
    trial = _pareto_trials(storage, PIXEL)[0]
    assert browser.find_elements(By.CSS_SELECTOR, f'table[data-study="{PIXEL}"] '
                                                  f'tr[data-trial="{trial}"]')
    assert f"--trial {trial} " in text
    _keep_screenshot(browser, tmp_path / "dashboard.png")


@needs_browser
def test_the_report_opens_offline_in_a_real_browser(storage, browser, tmp_path):
    """The report file, opened from disk with no server and no network, draws its plots."""
    from nas.studies import build_report

    report = tmp_path / "report.html"
    report.write_text(build_report([load_study(PIXEL, storage), load_study(GOLD, storage)]))
    text = _rendered_text(browser, report.as_uri())
    assert PIXEL in text and GOLD in text
    assert str(_pareto_trials(storage, PIXEL)[0]) in text
    _keep_screenshot(browser, tmp_path / "report.png")


@pytest.fixture(scope="module")
def optuna_dashboard(storage):
    """optuna-dashboard over the same database, as ``nas dashboard`` starts it."""
    server = start_optuna_dashboard(storage, "127.0.0.1", 0)
    yield optuna_dashboard_url(server)
    server.shutdown()
    server.server_close()


def test_optuna_dashboard_serves_our_studies(optuna_dashboard, storage):
    status, body = _get(optuna_dashboard.replace("/dashboard", "/api/studies"))
    assert status == 200
    names = {s["study_name"] for s in json.loads(body)["study_summaries"]}
    assert {PIXEL, GOLD} <= names
    assert f'href="{optuna_dashboard}"' in index_page(storage, optuna_dashboard)


def test_optuna_port_taken_is_a_one_line_error(storage):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            _cli(), ["--storage", storage, "--port", "0", "--optuna-port", str(port)],
            env={"COLUMNS": "200"},
        )
    line = _one_line_error(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--optuna-port" in line


@needs_browser
def test_optuna_dashboard_renders_our_study_in_a_real_browser(optuna_dashboard, browser,
                                                              tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(optuna_dashboard)
    WebDriverWait(browser, 30).until(
        lambda d: PIXEL in d.find_element(By.TAG_NAME, "body").text)
    _keep_screenshot(browser, tmp_path / "optuna-dashboard.png")


@needs_browser
def test_clicking_a_front_point_shows_its_subnet_and_export_command(server, storage,
                                                                     browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _rendered_text(browser, _compare_url(server, PIXEL))
    front = browser.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")[1]
    point = front.find_elements(By.CSS_SELECTOR, "path.point")[0]
    ActionChains(browser).move_to_element(point).pause(0.3).click().perform()
    panel = browser.find_element(By.ID, "selected")
    WebDriverWait(browser, 10).until(lambda d: "trial" in panel.text and "nas export" in panel.text)
    trial = int(panel.text.split("trial ")[1].split(":")[0])
    assert trial in _pareto_trials(storage, PIXEL)
    picked = browser.find_elements(By.CSS_SELECTOR, "tr.picked")
    assert [row.get_attribute("data-trial") for row in picked] == [str(trial)]


def test_a_postgres_study_is_served_like_the_sqlite_one(storage, postgres_url, tmp_path):
    """The same search written to PostgreSQL gives the same pages, but for the URL."""
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--supernet", "nb201", *SEARCHES[PIXEL],
         "--evals", "12", "--algorithm", "random", "--study", PIXEL, "--storage", postgres_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    pages = {}
    for url in (storage, postgres_url):
        running = serving(make_server(url, port=0))
        server = next(running)
        try:
            pages[url] = [_get(server.url + path) for path in
                          ("", f"compare?study={quote(PIXEL)}")]
        finally:
            next(running, None)
    (index, index_status), (compare, compare_status) = [
        (html, status) for status, html in pages[postgres_url]]
    assert index_status == compare_status == 200
    assert "<td>nb201</td><td>pixel3</td>" in index
    trials = _pareto_trials(postgres_url, PIXEL)
    assert trials == _pareto_trials(storage, PIXEL)
    for trial in trials:
        assert f'<tr data-trial="{trial}">' in compare
    assert f"--storage {postgres_url}" in compare
    def same(html: str, url: str) -> str:  # plotly names each figure's div afresh
        return re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "ID", html.replace(url, "URL"))

    assert same(compare, postgres_url) == same(pages[storage][1][1], storage)
    # optuna-dashboard too, given a plain postgresql:// URL
    server = start_optuna_dashboard(postgres_url.replace("+psycopg", ""), "127.0.0.1", 0)
    try:
        status, body = _get(optuna_dashboard_url(server).replace("/dashboard", "/api/studies"))
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == [PIXEL]
