package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/config"
)

func TestDashboardServesThePage(t *testing.T) {
	addr, _ := start(t, config.HTTP{})
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		path, contentType string
		contains          []string
	}{
		{"/", "text/html; charset=utf-8", []string{`<script src="dashboard.js" defer></script>`, `href="dashboard.css"`, `<main id="flows">`, `<span id="version" class="muted">test</span>`}},
		{"/dashboard.js", "text/javascript; charset=utf-8", []string{`fetch("api/flows"`, "POLL_MS = 2000", "Unauthorized"}},
		{"/dashboard.css", "text/css; charset=utf-8", []string{".flow {"}},
	} {
		code, hdr, body := get(t, c, "http://"+addr+tc.path, "")
		if code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", tc.path, code)
			continue
		}
		if got := hdr.Get("Content-Type"); got != tc.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.contentType)
		}
		for h, want := range map[string]string{
			"Content-Security-Policy": dashboardCSP,
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := hdr.Get(h); got != want {
				t.Errorf("GET %s: %s %q, want %q", tc.path, h, got, want)
			}
		}
		for _, s := range tc.contains {
			if !strings.Contains(body, s) {
				t.Errorf("GET %s: body lacks %q", tc.path, s)
			}
		}
	}
	// The page runs no inline script or style: the policy allows none.
	if strings.Contains(dashboardCSP, "unsafe-inline") || !strings.Contains(dashboardCSP, "script-src 'self'") {
		t.Errorf("CSP %q allows inline scripts or lacks script-src 'self'", dashboardCSP)
	}
	_, _, page := get(t, c, "http://"+addr+"/", "")
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, "<style") {
		t.Errorf("page has inline script or style, which the CSP blocks:\n%s", page)
	}
	if code, _, _ := get(t, c, "http://"+addr+"/dashboard.html", ""); code != http.StatusNotFound {
		t.Errorf("GET /dashboard.html: %d, want 404", code)
	}
}

func TestDashboardNeedsCredentials(t *testing.T) {
	for _, tc := range []struct {
		name      string
		http      config.HTTP
		good      string
		challenge string
		hint      bool // the 401 explains that a browser cannot send a bearer token
	}{
		{"bearer token", config.HTTP{AuthToken: testToken}, "Bearer " + testToken, `Bearer realm="kmirror"`, true},
		{"basic auth", config.HTTP{BasicAuth: &config.BasicAuth{Username: "ops", Password: testToken}}, basic("ops", testToken), `Basic realm="kmirror", charset="UTF-8"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := start(t, tc.http)
			c := &http.Client{Timeout: 10 * time.Second}
			for _, path := range []string{"/", "/dashboard.js", "/dashboard.css"} {
				code, hdr, body := get(t, c, "http://"+addr+path, "")
				if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != tc.challenge {
					t.Errorf("GET %s without credentials: %d, WWW-Authenticate %q; want 401, %q", path, code, hdr.Get("WWW-Authenticate"), tc.challenge)
				}
				if strings.Contains(body, "<html") {
					t.Errorf("GET %s without credentials shows the page", path)
				}
				if hint := strings.Contains(body, "cannot send the http.auth_token bearer token"); path == "/" && hint != tc.hint {
					t.Errorf("GET / without credentials: bearer hint shown %t, want %t: %s", hint, tc.hint, body)
				}
				if code, hdr, _ := get(t, c, "http://"+addr+path, tc.good); code != http.StatusOK || hdr.Get("Content-Security-Policy") == "" {
					t.Errorf("GET %s with the credentials: %d, CSP %q; want 200 with a CSP", path, code, hdr.Get("Content-Security-Policy"))
				}
			}
		})
	}
}
