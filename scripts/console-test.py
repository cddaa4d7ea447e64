#!/usr/bin/env python3
"""The console as a person uses it, in headless Chromium (Debian's chromium and chromedriver,
Selenium from PyPI): `dang run` with the shipped configuration, the page opened and signed in, a
limit breach published on MQTT, the alarm seen in the page, acknowledged there, and the
acknowledgement checked on MQTT and in PostgreSQL. A screenshot of each view is written.

usage: console-test.py DANG_BINARY SCREENSHOT_DIR   (DANG_MQTT_URL and DATABASE_URL set)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

TAG = "r1/cdu/cdu1/TI-105"  # flash zone temperature: LO 340, HI 368
TOKEN = "console-operate"
OPERATOR = "shift operator A"


def fail(message):
    print("console-test: FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(database_url, sql):
    return subprocess.run(["psql", database_url, "-qAtc", sql], check=True, capture_output=True, text=True).stdout.strip()


def main():
    dang, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    mqtt_url = os.environ["DANG_MQTT_URL"]
    host, port = mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
    work = tempfile.mkdtemp(prefix="dang-console-")
    # A database of its own: the page shows this test's plant, not what other tests left.
    name = "console_" + uuid.uuid4().hex
    psql(os.environ["DATABASE_URL"], f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    database_url = urllib.parse.urlunsplit(parts._replace(path="/" + name))

    api_port = free_port()
    log = open(os.path.join(work, "run.log"), "w")
    run = subprocess.Popen(
        [dang, "run", "--config", "config/orchestrator.yaml", "--mqtt-url", mqtt_url, "--database-url", database_url,
         "--spool-dir", os.path.join(work, "spool"), "--http", f"127.0.0.1:{api_port}"],
        env=dict(os.environ, DANG_API_TOKEN=TOKEN), stdout=log, stderr=subprocess.STDOUT)
    sub_log = os.path.join(work, "sub.log")
    sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-t", f"apos/alert/+/{TAG}"], stdout=open(sub_log, "w"))
    options = webdriver.ChromeOptions()
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900", "--disable-gpu"]:
        options.add_argument(argument)
    options.binary_location = "/usr/bin/chromium"
    browser = None
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", api_port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(browser, 15)
        browser.get(f"http://127.0.0.1:{api_port}/console")
        wait.until(conditions.visibility_of_element_located((By.ID, "token"))).send_keys(TOKEN)
        browser.find_element(By.ID, "operator").send_keys(OPERATOR)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait.until(lambda b: b.find_element(By.ID, "live").text == "live")

        # The breach, and the alarm in the page.
        start = int(time.time() * 1000) - 60_000
        samples = "\n".join(json.dumps({"ts": start + i * 1000, "v": 355 + (i % 3) * 0.2}) for i in range(30))
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", f"plant/{TAG}", "-l"], input=samples, text=True, check=True)
        time.sleep(0.5)
        breach = time.monotonic()
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", f"plant/{TAG}", "-m",
                        json.dumps({"ts": start + 31_000, "v": 371.5})], check=True)
        # (Read through the page's own DOM: the table is rebuilt on every event, so element handles go stale.)
        find = "return [...document.querySelectorAll('#alarms tbody tr')].filter(r => r.innerText.includes(arguments[0]) && r.innerText.includes('limit')).map(r => r.dataset.alert)[0] || null"
        alert_id = None
        deadline = breach + 10
        while time.monotonic() < deadline and alert_id is None:
            alert_id = browser.execute_script(find, TAG)
            if alert_id is None:
                time.sleep(0.02)
        seen = time.monotonic() - breach
        if alert_id is None:
            fail("the alarm did not appear in the page")
        print(f"ok: the alarm appeared in the console {seen * 1000:.0f} ms after the breach was published")
        if seen > 1.0:
            fail(f"the alarm took {seen:.2f} s to appear (more than a second)")
        browser.save_screenshot(os.path.join(shots, "console-alarms.png"))

        # Acknowledged in the page: on MQTT and in PostgreSQL, by the name given at sign-in.
        browser.execute_script("document.querySelector(`#alarms tr[data-alert='${arguments[0]}'] button.ack`).click()", alert_id)
        row_text = "return (document.querySelector(`#alarms tr[data-alert='${arguments[0]}']`) || {}).innerText || ''"
        wait.until(lambda b: "acknowledged by " + OPERATOR in b.execute_script(row_text, alert_id))
        deadline = time.monotonic() + 10
        acked = None
        while time.monotonic() < deadline and acked is None:
            for line in open(sub_log):
                body = json.loads(line)
                if body.get("alert_id") == alert_id and body.get("state") == "acknowledged":
                    acked = body
            time.sleep(0.1)
        if acked is None or acked.get("acked_by") != OPERATOR:
            fail(f"no acknowledgement by {OPERATOR!r} on MQTT: {acked}")
        recorded = psql(database_url, f"SELECT acked_by FROM alerts WHERE alert_id = '{alert_id}' AND acked_at IS NOT NULL")
        if recorded != OPERATOR:
            fail(f"the acknowledgement is not in PostgreSQL: {recorded!r}")
        print(f"ok: acknowledged in the page: on MQTT and in PostgreSQL as {OPERATOR!r}")

        # The filters: by priority and by unit (the standing alarm shown only where it belongs).
        listed = "return !!document.querySelector(`#alarms tr[data-alert='${arguments[0]}']`)"
        for severity, unit, shown in [("info", "", False), ("critical,warning", "", True), ("", "r1/fcc/fcc1", False), ("", "r1/cdu/cdu1", True)]:
            Select(browser.find_element(By.ID, "alarm-severity")).select_by_value(severity)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#alarm-unit option")) > 1)
            Select(browser.find_element(By.ID, "alarm-unit")).select_by_value(unit)
            try:
                wait.until(lambda b: b.execute_script(listed, alert_id) == shown)
            except Exception:
                fail(f"with priority {severity or 'any'!r} and unit {unit or 'all'!r} the alarm is {'not ' if shown else ''}listed")
        Select(browser.find_element(By.ID, "alarm-unit")).select_by_value("")
        print("ok: the alarms view filters by priority and by unit")

        browser.find_element(By.CSS_SELECTOR, "nav button[data-view=plant]").click()
        plant = "return document.querySelector('#units').innerText"
        wait.until(lambda b: TAG.split("/")[-1] in b.execute_script(plant) and "371.5" in b.execute_script(plant))
        if browser.execute_script("return document.querySelectorAll('#units svg.spark polyline').length") == 0:
            fail("the plant view draws no sparkline")
        if "undefined" in browser.execute_script(plant) or "null" in browser.execute_script(plant):
            fail("the plant view shows a missing limit as undefined or null")
        print("ok: the plant view shows the tag's value against its limits, with a sparkline")
        # The unit monitor's state (learning here: a unit trains on minutes of operation).
        if "monitor: learning its normal operation (" not in browser.execute_script(plant):
            fail("the plant view does not show the unit monitor's state: " + browser.execute_script(plant)[:300])
        print("ok: the plant view shows the unit monitor's state")

        # A decision's invocation and, once the module answers on its result topic, its result.
        request = urllib.request.Request(f"http://127.0.0.1:{api_port}/decisions?limit=50", headers={"Authorization": "Bearer " + TOKEN})
        invoked = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and invoked is None:
            decisions = json.load(urllib.request.urlopen(request))["decisions"]
            invoked = next((d for d in decisions if d.get("invocation")), None)
            time.sleep(0.2)
        if invoked is None:
            fail("the breach made no decision with an invocation")
        # The view open first: the result must appear in it without a click (read again with the status).
        browser.find_element(By.CSS_SELECTOR, "nav button[data-view=decisions]").click()
        wait.until(conditions.visibility_of_element_located((By.ID, "view-decisions")))
        time.sleep(0.3)
        result = {"invocation_id": invoked["invocation"]["invocation_id"], "status": "ok", "output": {"note": "<b>as text</b>"}}
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", f"apos/result/{invoked['module']}", "-m", json.dumps(result)], check=True)
        shown = "return [...document.querySelectorAll('#decisions details.result pre')].map(p => p.textContent).join('\\n')"
        wait.until(lambda b: "<b>as text</b>" in b.execute_script(shown))
        if browser.execute_script("return document.querySelectorAll('#decisions details.result b').length") != 0:
            fail("a module's result was put into the page as HTML")
        print(f"ok: the decisions view shows the {invoked['module']} invocation's result (as text)")
        for view in ["plant", "decisions", "gateway"]:
            browser.find_element(By.CSS_SELECTOR, f"nav button[data-view={view}]").click()
            wait.until(conditions.visibility_of_element_located((By.ID, "view-" + view)))
            time.sleep(0.5 if view != "gateway" else 2.5)  # the gateway view fills from the next status push
            if view == "decisions":
                browser.execute_script("document.querySelectorAll('#decisions details.result').forEach(d => d.open = true)")
            browser.save_screenshot(os.path.join(shots, f"console-{view}.png"))
        gateway = browser.execute_script("return document.querySelector('#gateway').innerText")
        if "MQTT broker\tconnected" not in gateway and "MQTT broker connected" not in gateway.replace("\n", " "):
            fail("the gateway view does not show the broker connection: " + gateway)
        print(f"ok: screenshots of the four views in {shots}")
    finally:
        if browser is not None:
            browser.quit()
        sub.terminate()
        run.terminate()
        try:
            run.wait(timeout=15)
        except subprocess.TimeoutExpired:
            run.kill()
            fail("dang run did not stop on SIGTERM with the console open")


if __name__ == "__main__":
    main()
