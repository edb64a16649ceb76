package server

import (
	"embed"
	"html"
	"net/http"
	"strings"
)

// The dashboard at / is static: an HTML page, its script and its style
// sheet, embedded in the binary. The script reads /api/flows every 2 s
// and renders it; it needs no build step and loads nothing from
// elsewhere.
//
//go:embed ui/index.html ui/dashboard.js ui/dashboard.css
var ui embed.FS

// dashboardCSP allows the page only its own script, style sheet and
// /api/flows: no inline script or style, nothing from another origin, no
// framing.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// dashboard serves one embedded file of the dashboard with its content
// type and the security headers.
func (s *Server) dashboard(name, contentType string) http.HandlerFunc {
	body, err := ui.ReadFile("ui/" + name)
	if err != nil {
		panic("server: embedded dashboard file missing: " + name) // cannot happen: checked by go:embed
	}
	if name == "index.html" {
		body = []byte(strings.Replace(string(body), `<span id="version" class="muted"></span>`,
			`<span id="version" class="muted">`+html.EscapeString(s.version)+`</span>`, 1))
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}
}
