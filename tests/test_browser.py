"""report.html in a real browser (headless Chromium through chromedriver): no console errors,
tables and charts render, the sorter sorts, audit text that looks like HTML stays text (no
script in it runs), and at 1400 px the page fits the window and leads with the answer (the
verdict and charts before the full tables). Full-page screenshots are kept under pytest's tmp
dir and, when MEMAUDIT_ARTIFACTS names a dir, there too. Skipped where Chromium is not
installed (CI installs it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from memaudit.report.compare import compare_runs
from memaudit.report.render import write_report
from tests.helpers import PAYLOAD, write_fake_run

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WIDTH = 1400  # a laptop browser window: the report must fit it without scrolling sideways
if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        "needs headless Chromium: apt-get install chromium chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install -e '.[test]'")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    runs = [
        write_fake_run(root, "std", kind="standard", member=1.0, valid=4.0, exact=0.5),
        write_fake_run(root, "sink", kind="memsink", sink_mode="off", member=2.5, valid=4.2, exact=0.0),
        write_fake_run(root, "oracle", kind="no-repeats", member=3.1, nonmember=3.1, valid=4.5, exact=0.0),
    ]
    return write_report(compare_runs(runs), root / "report") / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        f"--window-size={WIDTH},2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, report):
    browser.get(report.as_uri())
    return browser


def test_no_console_errors_and_no_script_from_audit_text_runs(page):
    messages = [entry["message"] for entry in page.get_log("browser")]
    assert messages == []  # the page logs nothing; a CSP violation or a JS error would show here
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert  # noqa: B018
    assert page.title.startswith("memaudit report") and page.execute_script("return window.pwned") is None
    cells = page.find_elements(By.CSS_SELECTOR, "#sequences td.seq")
    assert PAYLOAD in [c.text for c in cells]  # shown as text, characters and all
    assert not page.find_elements(By.CSS_SELECTOR, "#sequences img, #sequences td script")
    riskiest = [c.text for c in page.find_elements(By.CSS_SELECTOR, "#riskiest td.text")]
    assert PAYLOAD in riskiest  # the extracted record leads the riskiest, its prefix shown as text too
    assert not page.find_elements(By.CSS_SELECTOR, "#riskiest img, #riskiest td script")
    assert "&lt;script&gt;document.title" in page.page_source


def test_tables_and_charts_render(page):
    assert len(page.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")) >= 10
    assert len(page.find_elements(By.CSS_SELECTOR, "#sequences tbody tr")) == 9
    charts = page.find_elements(By.CSS_SELECTOR, ".chart svg")
    assert len(charts) == 3
    for chart in charts:
        assert chart.size["width"] > 300 and chart.size["height"] > 150


def _column(page, index: int) -> list[str]:
    rows = page.find_elements(By.CSS_SELECTOR, "#sequences tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-sort") for r in rows]


def test_clicking_a_header_sorts_the_sequences(page):
    headers = page.find_elements(By.CSS_SELECTOR, "#sequences thead th")
    col = [h.text for h in headers].index("memsink (sinks off)")
    headers[col].click()
    ascending = [float(v) for v in _column(page, col)]
    assert ascending == sorted(ascending) and headers[col].get_attribute("aria-sort") == "ascending"
    headers[col].click()
    assert [float(v) for v in _column(page, col)] == sorted(ascending, reverse=True)
    repeats = [h.text for h in headers].index("repeats")
    headers[repeats].click()
    shown = [
        int(r.find_elements(By.TAG_NAME, "td")[repeats].text)
        for r in page.find_elements(By.CSS_SELECTOR, "#sequences tbody tr")
    ]
    assert shown == sorted(shown)


def screenshot(page, path: Path) -> Path:
    """The whole page at WIDTH px, kept as a test artifact (also in $MEMAUDIT_ARTIFACTS if set)."""
    height = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(WIDTH, min(height, 9000))
    assert page.save_screenshot(str(path))
    if os.environ.get("MEMAUDIT_ARTIFACTS"):
        Path(os.environ["MEMAUDIT_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["MEMAUDIT_ARTIFACTS"]) / path.name)
    page.set_window_size(WIDTH, 2000)
    return path


# Whether anything sticks out sideways: the document, or a table past the body's content box.
OVERFLOW = """
const d = document.documentElement, right = document.body.getBoundingClientRect().right;
const tables = Array.from(document.querySelectorAll("table")).filter(t => t.getBoundingClientRect().right > right + 1);
return {scroll: d.scrollWidth, client: d.clientWidth, tables: tables.map(t => t.id || t.className)};
"""


def assert_fits_and_leads_with_the_answer(page) -> None:
    page.set_window_size(WIDTH, 2000)
    for opened in (False, True):  # the details too, opened
        page.execute_script(f"document.querySelectorAll('details').forEach(d => d.open = {str(opened).lower()})")
        fit = page.execute_script(OVERFLOW)
        assert fit["scroll"] <= fit["client"] and not fit["tables"], (opened, fit)
    top = "return document.querySelector(arguments[0]).getBoundingClientRect().top + window.scrollY"
    order = ["#verdict", "#tradeoff svg", "#headline", "#riskiest", "#metrics", "#sequences", "#models"]
    tops = [page.execute_script(top, selector) for selector in order]
    assert tops == sorted(tops), dict(zip(order, tops))  # the answer first, the details after
    page.execute_script("document.querySelectorAll('details').forEach(d => d.open = false)")


def test_the_page_fits_1400_px_and_leads_with_the_answer(page, tmp_path):
    assert_fits_and_leads_with_the_answer(page)
    screenshot(page, tmp_path / "report.png")


def test_screenshot_is_not_blank(page, tmp_path):
    image = Image.open(screenshot(page, tmp_path / "report.png")).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, table shading, several chart colours
    white = max(count for count, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.97 * image.width * image.height


def test_the_demo_report_renders_without_errors(browser, quick_demo, tmp_path):
    browser.get((quick_demo / "report" / "report.html").as_uri())
    assert [entry["message"] for entry in browser.get_log("browser")] == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sequences tbody tr")) >= 24  # members, held-out, canaries
    assert len(browser.find_elements(By.CSS_SELECTOR, ".chart svg")) == 3
    assert_fits_and_leads_with_the_answer(browser)
    image = Image.open(screenshot(browser, tmp_path / "demo-report.png")).convert("RGB")
    assert len(image.getcolors(maxcolors=1 << 20)) > 200
