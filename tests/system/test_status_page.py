"""The status page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
loads it from a tunnel server process and sees a tunnel appear and go away.

Set GOSTGEV_SCREENSHOT=path to keep a screenshot of the page with the tunnel connected.
"""

import os
import shutil
import signal

import gevent
import pytest
import yaml

from tests.conftest import http_get, name_responder
from tests.handler.test_tunnel import TUNNEL_A
from tests.procs import gostgev_process, wait_listening
from tests.system.test_faults import FAST_KEEPALIVE, client_process

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    from selenium import webdriver  # in the test extras

    if not os.path.exists(CHROMEDRIVER):
        pytest.fail("chromedriver is not installed (.ci/run installs Debian's chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def text_of(driver, element_id):
    return driver.find_element("id", element_id).text


def test_the_status_page_shows_a_tunnel_come_and_go(browser, processes, tmp_path, backend):
    from selenium.webdriver.support.ui import WebDriverWait

    conf = tmp_path / "server.yaml"
    conf.write_text(yaml.safe_dump({
        "services": [{"name": "server", "addr": "127.0.0.1:0", "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "ingress": "ingress-0", **FAST_KEEPALIVE}}}],
        "ingresses": [{"name": "ingress-0", "rules": [{"hostname": "app.local", "endpoint": TUNNEL_A}]}],
        "api": {"addr": "127.0.0.1:0"},
    }))
    log = tmp_path / "server.log"
    server = gostgev_process(["-c", conf, "--log-level", "info"], log)
    processes.append(server)
    ports = wait_listening(server, log, ["server", "server entrypoint", "api"])
    wait = WebDriverWait(browser, 15, poll_frequency=0.2)

    browser.get("http://127.0.0.1:%d/ui" % ports["api"])
    wait.until(lambda d: text_of(d, "updated").startswith("updated"))
    assert "server" in text_of(browser, "services") and "app.local" in text_of(browser, "ingresses")
    assert "no tunnel connections" in text_of(browser, "tunnels")

    site = backend(name_responder("app"))
    client = client_process(tmp_path, "client", ports["server"], site.addr)
    processes.append(client)
    wait.until(lambda d: TUNNEL_A in text_of(d, "tunnels"))
    assert "127.0.0.1:" in text_of(browser, "tunnels")        # the client's address
    for _ in range(5):
        assert http_get(ports["server entrypoint"], "app.local") == (200, b"app")
        gevent.sleep(0.3)
    wait.until(lambda d: "0 / 5" in text_of(d, "tunnels"))     # streams open / all
    if os.environ.get("GOSTGEV_SCREENSHOT"):
        browser.save_screenshot(os.environ["GOSTGEV_SCREENSHOT"])

    client.send_signal(signal.SIGKILL)
    wait.until(lambda d: TUNNEL_A not in text_of(d, "tunnels"))
    assert "no tunnel connections" in text_of(browser, "tunnels")
