"""nmt-serve's page in a real headless browser (Chromium from Debian's packages, driven by
Selenium): type a sentence, press Translate, read the translation nmt-translate gives for it,
and find the alignment heatmap drawn. .ci/run installs Chromium and its driver when missing."""

from __future__ import annotations

import shutil

import pytest

from tests.test_serve import RELEASE, ServerProcess, cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver (.ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_translates_and_draws_the_alignment(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    sentence = "Y dijo Dios: Sea la luz: y fué la luz."
    nbest = cli("translate", [f"ckpt={RELEASE}", "decode=beam", "decode.beam_size=3", "nbest=3"], sentence + "\n")
    expected = nbest.splitlines()[0].split("\t")[4]  # what the page asks for: beam 3, three alternatives
    server = ServerProcess([f"ckpt={RELEASE}", "source=es", "target=en"], tmp_path)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#pair option"))  # the models listed
        source = browser.find_element(By.ID, "source")
        source.clear()
        source.send_keys(sentence)
        beam = browser.find_element(By.ID, "beam")
        beam.clear()
        beam.send_keys("3")
        browser.find_element(By.ID, "translate").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "translation"), expected[:5]))
        assert browser.find_element(By.ID, "translation").text == expected
        assert browser.find_element(By.ID, "error").text == ""
        rows = browser.find_elements(By.CSS_SELECTOR, "#nbest-table tr")
        assert len(rows) == 1 + 3  # the header and three alternatives
        heatmap = browser.find_element(By.ID, "heatmap")
        assert heatmap.get_attribute("data-drawn") == "true" and heatmap.is_displayed()
        assert int(heatmap.get_attribute("data-columns")) > 5 and int(heatmap.get_attribute("data-rows")) > 5
        # Something was painted: not every pixel of the heatmap's grid is the same.
        colours = browser.execute_script(
            "const c = document.getElementById('heatmap'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; const seen = new Set();"
            "for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i]); return seen.size;"
        )
        assert colours > 5
    finally:
        code = server.stop()
    assert code == 0, server.text()
