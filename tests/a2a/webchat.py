"""WebChat in a real headless Chromium, driven by Selenium, as a person uses it.

    python webchat.py URL TOKEN

Opens the gateway's `/` (a browser is sent to `/chat`), gives the token the
page asks for, asks a question with the keyboard (Enter sends; Shift+Enter is a
new line), sees the answer and its tool calls (collapsed) and cost, reloads and
still sees the conversation, stops a long task, looks at it on a phone-sized
screen, and takes a screenshot. Prints one JSON object (the last line) with what
it saw; the Rust test (tests/tests/a2a.rs) asserts on it.
"""

import json
import os
import struct
import sys
import tempfile
import time
import urllib.request
import zlib

os.environ["SE_AVOID_STATS"] = "true"  # Selenium Manager must not reach the internet

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

url, token = sys.argv[1].rstrip("/"), sys.argv[2]
out = {}


def png_colours(png: bytes) -> int:
    """How many distinct byte values the image's pixel data holds (1: blank)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat = 8, b""
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        kind = png[i + 4 : i + 8]
        if kind == b"IDAT":
            idat += png[i + 8 : i + 8 + n]
        i += 12 + n
    return len(set(zlib.decompress(idat)))


def rpc(method, params):
    req = urllib.request.Request(
        url + "/",
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer " + token,
            "A2A-Version": "1.0",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


opts = webdriver.ChromeOptions()
for a in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--window-size=1200,900",
    "--user-data-dir=" + tempfile.mkdtemp(prefix="hearth-chrome-"),
):
    opts.add_argument(a)
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(
    service=Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
    options=opts,
)
wait = WebDriverWait(driver, 60)


def last_answer():
    msgs = driver.find_elements(By.CSS_SELECTOR, "#log .msg.assistant")
    return msgs[-1] if msgs else None


def answer_text():
    a = last_answer()
    return a.find_element(By.CSS_SELECTOR, ".text").text if a else ""


try:
    t0 = time.monotonic()
    driver.get(url + "/")
    out["redirected_to"] = driver.current_url
    # The gateway has a token: the page asks for it.
    wait.until(lambda d: d.execute_script("return document.getElementById('tokendlg').open"))
    out["time_to_interactive_ms"] = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.domInteractive - n.startTime;"
    )
    out["asked_for_token"] = True
    box = driver.find_element(By.ID, "token")
    box.send_keys(token + Keys.ENTER)
    wait.until(lambda d: not d.execute_script("return document.getElementById('tokendlg').open"))
    out["transfer_bytes"] = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return [n].concat(performance.getEntriesByType('resource'))"
        ".filter(e => !e.name.includes('/v1/') && !e.name.includes('agent-card'))"
        ".reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0);"
    )

    # Shift+Enter is a new line, not a send.
    inp = driver.find_element(By.ID, "input")
    inp.send_keys("first line")
    inp.send_keys(Keys.SHIFT, Keys.ENTER)
    inp.send_keys("second line")
    out["shift_enter"] = {
        "value": inp.get_attribute("value"),
        "messages": len(driver.find_elements(By.CSS_SELECTOR, "#log .msg")),
    }
    inp.clear()

    # A question, sent with Enter; the answer, its tool calls and its cost.
    inp.send_keys("What is 17*23+4?" + Keys.ENTER)
    wait.until(lambda d: "395" in answer_text() and d.find_elements(By.CSS_SELECTOR, "#log .msg.assistant .cost"))
    a = last_answer()
    steps = a.find_elements(By.CSS_SELECTOR, "details.steps")
    out["answer"] = {
        "text": answer_text(),
        "cost": a.find_element(By.CSS_SELECTOR, ".cost").text,
        "steps_collapsed": bool(steps) and steps[0].get_attribute("open") is None,
        "steps": driver.execute_script(
            "return [...document.querySelectorAll('#log .msg.assistant:last-child details.steps li')].map(l => l.textContent)"
        ),
        "answered_in_s": time.monotonic() - t0,
    }

    # Reloaded, the conversation is still there (and listed).
    driver.refresh()
    wait.until(lambda d: "395" in answer_text())
    out["after_reload"] = {
        "text": answer_text(),
        "conversations": [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#convs button")],
    }

    # A long task, stopped with the Stop button: the task is canceled.
    driver.find_element(By.ID, "new").click()
    inp = driver.find_element(By.ID, "input")
    inp.send_keys("What is 2**10?" + Keys.ENTER)
    stop = driver.find_element(By.ID, "stop")
    wait.until(lambda d: stop.is_displayed())
    # The first chunk names the task; then stop.
    time.sleep(0.5)
    stop.click()
    wait.until(lambda d: not d.find_element(By.ID, "stop").is_displayed())
    a = last_answer()
    out["stopped"] = {
        "note": a.find_element(By.CSS_SELECTOR, ".cost").text if a.find_elements(By.CSS_SELECTOR, ".cost") else "",
        "text": answer_text(),
    }
    states = []
    for _ in range(20):
        tasks = rpc("ListTasks", {}).get("result", {}).get("tasks", [])
        states = [t.get("status", {}).get("state") for t in tasks]
        if "TASK_STATE_CANCELED" in states:
            break
        time.sleep(0.5)
    out["stopped"]["task_states"] = states

    # A phone-sized screen: the menu button shows and nothing overflows.
    driver.set_window_size(390, 844)
    time.sleep(0.3)
    out["narrow"] = driver.execute_script(
        "return {menu: getComputedStyle(document.getElementById('menu')).display !== 'none',"
        " overflow: document.documentElement.scrollWidth > window.innerWidth + 1,"
        " input_visible: document.getElementById('input').getBoundingClientRect().right <= window.innerWidth + 1}"
    )
    driver.set_window_size(1200, 900)

    png = driver.get_screenshot_as_png()
    shot = os.path.join(tempfile.gettempdir(), "hearth-webchat.png")
    with open(shot, "wb") as f:
        f.write(png)
    out["screenshot"] = {"path": shot, "bytes": len(png), "colours": png_colours(png)}
    out["console"] = [
        {"level": e["level"], "message": e["message"]}
        for e in driver.get_log("browser")
        if e["level"] in ("SEVERE", "WARNING")
    ]
except Exception as e:  # noqa: BLE001 - report, the Rust side asserts
    out["fatal"] = f"{type(e).__name__}: {e}"
    try:
        out["page"] = driver.find_element(By.TAG_NAME, "body").text[:2000]
        out["console"] = driver.get_log("browser")
    except Exception:  # noqa: BLE001
        pass
finally:
    driver.quit()

print(json.dumps(out))
