package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmirror/kmirror/test/kafkatest"
)

// envDashboardPNG names a file the dashboard test writes its screenshot
// to (the documentation's docs/img/dashboard.png is made this way).
const envDashboardPNG = "KMIRROR_DASHBOARD_PNG"

// TestDashboard loads the admin server's page at / in headless Chromium
// against `kmirror demo --serve` (embedded clusters, a running flow with
// traffic) and checks that the page's script filled it from /api/flows:
// the flow, its record count, its topics and, over real time, a non-zero
// throughput.
func TestDashboard(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	if testing.Short() {
		t.Skip("dashboard: browser test; -short runs the fast tier only")
	}
	browser := chromiumPath()
	if browser == "" {
		if os.Getenv(kafkatest.EnvRequire) == "1" {
			t.Fatalf("dashboard: no chromium in PATH (and %s=1 forbids skipping); scripts/test.sh installs it", kafkatest.EnvRequire)
		}
		t.Skip("dashboard: skipping, no chromium in PATH")
	}
	addr := freeAddr(t)
	startDemo(t, addr)
	url := "http://" + addr + "/"
	start := time.Now()

	// 1. The page as a plain command line renders it: --dump-dom after
	// a few polls in virtual time.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var dom []byte
	waitFor(t, 60*time.Second, "the dashboard's DOM to show the flow", func() (bool, string) {
		out, err := exec.CommandContext(ctx, browser, "--headless=new", "--disable-gpu", "--no-sandbox",
			"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url).Output()
		if err != nil {
			return false, fmt.Sprintf("chromium: %v", err)
		}
		dom = out
		return bytes.Contains(out, []byte(`data-flow="primary-to-dr"`)), string(out)
	})
	html := string(dom)
	if !strings.Contains(html, `<h2 class="flow-name">primary-to-dr</h2>`) || !strings.Contains(html, "primary → dr") {
		t.Errorf("DOM lacks the flow's name or route:\n%s", html)
	}
	if polls := attrInt(html, `data-polls="(\d+)"`); polls < 2 {
		t.Errorf("the page polled /api/flows %d times in 5 s of virtual time, want 2 or more", polls)
	}
	records := attrInt(html, `data-stat="records" data-value="(\d+)"`)
	if records < 2000 {
		t.Errorf("records replicated shown: %d, want at least the demo's 2000", records)
	}
	for _, topic := range []string{"orders", "payments", "clickstream"} {
		if !strings.Contains(html, `<tr class="topic" data-topic="`+topic+`"><td class="topic-source">`+topic+`</td>`) {
			t.Errorf("DOM lacks the row of topic %s", topic)
		}
	}
	if !strings.Contains(html, `<span class="state ready">ready</span>`) {
		t.Errorf("the flow is not shown ready")
	}
	if !strings.Contains(html, `<div id="banner" class="banner" hidden="">`) {
		t.Errorf("the error banner shows")
	}
	t.Logf("dump-dom: %d bytes, %d records shown, after %s", len(dom), records, time.Since(start).Round(time.Millisecond))

	// 2. In real time, through the DevTools protocol: the throughput
	// computed from two polls, then a screenshot.
	cdp := startCDP(ctx, t, browser)
	session := cdp.open(t, url)
	var rate float64
	took := waitFor(t, 30*time.Second, "a non-zero throughput on the page", func() (bool, string) {
		v, err := cdp.eval(session, `(document.querySelector('[data-stat="throughput"]')||{}).dataset?.value || ""`)
		if err != nil {
			return false, err.Error()
		}
		rate, _ = strconv.ParseFloat(v, 64)
		return rate > 0, "throughput data-value " + strconv.Quote(v)
	})
	t.Logf("throughput shown: %.2f records/s, %s after the page opened", rate, took.Round(time.Millisecond))
	png, err := cdp.screenshot(session)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if path := os.Getenv(envDashboardPNG); path != "" {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s (%d bytes)", path, len(png))
	}
}

// chromiumPath returns the Chromium binary in PATH, or "".
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// attrInt returns the integer the first group of re matches in s, or -1.
func attrInt(s, re string) int64 {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// startDemo runs `kmirror demo --serve` with its admin server on addr and
// returns once it serves; it is killed when the test ends.
func startDemo(t *testing.T, addr string) {
	t.Helper()
	cmd := exec.Command(kmirrorBin, "demo", "--serve", "--records", "2000", "--http", addr)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kmirror demo: %v", err)
	}
	var mu sync.Mutex
	var out strings.Builder
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "Serving until interrupted") {
				once.Do(func() { close(serving) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			mu.Lock()
			t.Logf("kmirror demo output:\n%s", out.String())
			mu.Unlock()
		}
	})
	select {
	case <-serving:
	case err := <-exited:
		exited <- err
		t.Fatalf("kmirror demo exited before serving: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("kmirror demo not serving within 2 minutes")
	}
}

// cdp speaks the Chrome DevTools protocol to a headless Chromium over
// --remote-debugging-pipe: JSON messages ended by a NUL byte, written to
// the browser's fd 3 and read from its fd 4.
type cdp struct {
	w      io.Writer
	mu     sync.Mutex
	nextID int
	wait   map[int]chan cdpReply
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func startCDP(ctx context.Context, t *testing.T, browser string) *cdp {
	t.Helper()
	toBrowser, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, browser, "--headless=new", "--disable-gpu", "--no-sandbox",
		"--user-data-dir="+t.TempDir(), "--window-size=1280,900", "--hide-scrollbars",
		"--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	c := &cdp{w: w, wait: map[int]chan cdpReply{}}
	go func() {
		br := bufio.NewReader(r)
		for {
			msg, err := br.ReadBytes(0)
			if err != nil {
				return
			}
			var m struct {
				ID int `json:"id"`
				cdpReply
			}
			if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
				continue // an event
			}
			c.mu.Lock()
			ch := c.wait[m.ID]
			delete(c.wait, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
		}
	}()
	t.Cleanup(func() {
		w.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		r.Close()
	})
	return c
}

// call sends one command (to session, "" for the browser) and decodes
// its result into out.
func (c *cdp) call(session, method string, params, out any) error {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan cdpReply, 1)
	c.wait[id] = ch
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b, err := json.Marshal(msg)
	if err == nil {
		_, err = c.w.Write(append(b, 0))
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return fmt.Errorf("%s: %s", method, rep.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(rep.Result, out)
		}
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s: no answer from chromium in 20 s", method)
	}
}

// open opens url in a new page and returns the session attached to it.
func (c *cdp) open(t *testing.T, url string) string {
	t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call("", "Target.createTarget", map[string]any{"url": url}, &target); err != nil {
		t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	if err := c.call(att.SessionID, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		t.Fatal(err)
	}
	return att.SessionID
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (c *cdp) eval(session, expr string) (string, error) {
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := c.call(session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res); err != nil {
		return "", err
	}
	if res.Exception != nil {
		return "", errors.New("script: " + res.Exception.Text)
	}
	return fmt.Sprint(res.Result.Value), nil
}

// screenshot returns the page's viewport as a PNG.
func (c *cdp) screenshot(session string) ([]byte, error) {
	var res struct {
		Data string `json:"data"`
	}
	if err := c.call(session, "Page.captureScreenshot", map[string]any{"format": "png"}, &res); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(res.Data)
}
