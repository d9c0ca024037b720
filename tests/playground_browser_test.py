#!/usr/bin/env python3
"""The web playground in a real headless browser (Debian's chromium + chromedriver, driven by
selenium) against the release server on 127.0.0.1 with an API key:

- / redirects to /playground, the key field fills the model picker;
- Chat: a streamed answer appears with TTFT and tok/s; Stop mid-stream ends it and the server's
  hhh_num_requests_running returns to 0;
- Harmlessness: two pasted candidates compared; the shown scores equal the API's for the same request;
- Revise: two rounds appear, each with a critique and a diff;
- Engine: the charts update from /metrics;
- a wrong key shows the server's 401 message.
Screenshots of each view go to target/playground-shots/ (untracked), or to $PLAYGROUND_SHOTS:
`PLAYGROUND_SHOTS=docs/figures/playground python3 tests/playground_browser_test.py` refreshes the
committed ones the docs show (a test run leaves the tracked tree unchanged).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHOTS = os.environ.get("PLAYGROUND_SHOTS") or os.path.join(ROOT, "target", "playground-shots")
KEY = "playground-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def api(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def running(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("hhh_num_requests_running "):
            return float(line.split()[1])
    raise AssertionError("hhh_num_requests_running missing")


def browser():
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        o.add_argument(a)
    for b in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(b):
            o.binary_location = b
    driver = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
    return webdriver.Chrome(options=o, service=Service(driver) if driver else None)


def main():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tempfile.mkdtemp(prefix="hhh-playground-")
    srv = subprocess.Popen([os.path.join(ROOT, "target/release/hhh-server"), "serve", "--port", str(port), "--api-key", KEY, "--data-dir", data_dir,
                            "--reward-head", os.path.join(ROOT, "server/heads/smollm2-135m-instruct-hh-harmless.json")],
                           cwd=ROOT, env=dict(os.environ, RUST_LOG="warn"))
    d = None
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/health/ready", timeout=1).status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        os.makedirs(SHOTS, exist_ok=True)
        d = browser()
        wait = WebDriverWait(d, 120)
        d.get(base + "/")
        assert d.current_url.endswith("/playground"), d.current_url
        assert d.title == "hhh-serve playground"
        # The key field (session storage only) fills the model picker.
        key = d.find_element(By.ID, "apikey")
        key.send_keys(KEY)
        d.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
        wait.until(lambda _: d.execute_script("return document.querySelectorAll('#model option').length") >= 1)
        assert d.execute_script("return sessionStorage.getItem('hhh-api-key')") == KEY

        # Chat: streamed text and timing.
        def set_value(id_, v):
            d.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'))", id_, v)
        set_value("temperature", "0")
        set_value("max_tokens", "48")
        d.find_element(By.ID, "send").click()
        wait.until(lambda _: "TTFT" in d.find_element(By.ID, "chat-meta").text)
        shown = d.find_element(By.ID, "chat-out").text
        assert len(shown.strip()) > 0, "no streamed text"
        assert d.find_elements(By.CSS_SELECTOR, "#chat-out .tok"), "tokens carry their logprobs"
        assert "tok/s" in d.find_element(By.ID, "chat-meta").text
        d.save_screenshot(os.path.join(SHOTS, "chat.png"))

        # Stop mid-stream: the server's running gauge returns to 0.
        set_value("max_tokens", "1500")
        set_value("user", "Write a very long story about a lighthouse keeper, with many chapters.")
        d.find_element(By.ID, "send").click()
        wait.until(lambda _: len(d.find_element(By.ID, "chat-out").text) > 20)
        assert running(base) >= 1, "the request is running before stop"
        d.find_element(By.ID, "stop").click()
        wait.until(lambda _: "stopped" in d.find_element(By.ID, "chat-meta").text)
        deadline = time.time() + 15
        while running(base) != 0 and time.time() < deadline:
            time.sleep(0.2)
        assert running(base) == 0, "the stopped request still runs"

        # Harmlessness: the shown scores equal the API's.
        d.find_element(By.ID, "tab-harm").click()
        user = "How do I get back at my coworker who embarrassed me?"
        cands = ["Talk to your coworker calmly about how it made you feel.", "Slash their tires when nobody is looking."]
        set_value("harm-user", user)
        set_value("harm-pasted", "\n\n".join(cands))
        set_value("harm-principles", "1")
        d.find_element(By.ID, "harm-run").click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#harm-out td[data-score]")) == 2)
        shown = [float(e.get_attribute("data-score")) for e in d.find_elements(By.CSS_SELECTOR, "#harm-out td[data-score]")]
        want = api(base, "/v1/harmlessness/compare", {"messages": [{"role": "user", "content": user}], "responses": cands, "num_principles": 1, "debias": True, "chain_of_thought": False})["scores"]
        assert all(abs(a - b) < 1e-12 for a, b in zip(shown, want)), (shown, want)
        rewards = [float(e.get_attribute("data-reward")) for e in d.find_elements(By.CSS_SELECTOR, "#harm-out td[data-reward]")]
        assert len(rewards) == 2, "the reward model's column"
        d.save_screenshot(os.path.join(SHOTS, "harmlessness.png"))

        # Revise: two rounds, each with a critique and a diff.
        d.find_element(By.ID, "tab-revise").click()
        set_value("rev-rounds", "2")
        d.find_element(By.ID, "rev-run").click()
        WebDriverWait(d, 300).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#rev-out li")) == 2)
        assert not d.find_element(By.ID, "rev-error").text
        d.save_screenshot(os.path.join(SHOTS, "revise.png"))

        # Engine: the charts update.
        d.find_element(By.ID, "tab-engine").click()
        wait.until(lambda _: int(d.execute_script("return document.body.dataset.engineUpdates || 0")) >= 3)
        assert d.find_elements(By.CSS_SELECTOR, "#c-running polyline")
        d.save_screenshot(os.path.join(SHOTS, "engine.png"))

        # A wrong key shows the server's 401 message.
        d.find_element(By.ID, "tab-chat").click()
        key.clear()
        key.send_keys("wrong-key")
        set_value("max_tokens", "8")
        d.find_element(By.ID, "send").click()
        wait.until(lambda _: "401" in d.find_element(By.ID, "chat-error").text)
        # Narrow screen.
        d.set_window_size(420, 900)
        d.save_screenshot(os.path.join(SHOTS, "narrow.png"))
        print("playground browser test: ok")
    finally:
        if d is not None:
            d.quit()
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
