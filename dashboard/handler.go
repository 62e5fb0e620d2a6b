package dashboard

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

//go:embed pages/*.html
var pageFiles embed.FS

var pages = template.Must(template.ParseFS(pageFiles, "pages/*.html"))

// Names of the session cookie and of the header carrying the CSRF token.
const (
	CookieName = "cacheplane_session"
	CSRFHeader = "X-Cacheplane-CSRF"
)

// Config is what Handler serves.
type Config struct {
	// Auth holds the tokens and sessions.
	Auth *Auth
	// API is the admin API (paths /v1/...), served under /api/ to a
	// session; the session is in the request's context (SessionID).
	API http.Handler
	// Node names the coordinator serving the pages (shown in their header).
	Node string
	Log  *slog.Logger
}

type sessionKey struct{}

// SessionID is the id of the dashboard session a request to Config.API
// comes from.
func SessionID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(sessionKey{}).(string)
	return id, ok
}

// Handler serves the login, the pages, their assets and the API behind the
// session check. Writes (and the URL reveal, GET /api/v1/env) need the
// session's CSRF token in the X-Cacheplane-CSRF header.
func Handler(cfg Config) http.Handler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &handler{cfg: cfg}
	static, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", h.loginPage)
	mux.HandleFunc("POST /login", h.login)
	mux.HandleFunc("POST /logout", h.logout)
	mux.HandleFunc("GET /{$}", h.page("overview.html"))
	mux.HandleFunc("GET /addons/{id}", h.page("addon.html"))
	mux.HandleFunc("GET /hosts/{id}", h.page("host.html"))
	mux.HandleFunc("/api/", h.api)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	return secureHeaders(mux)
}

type handler struct{ cfg Config }

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		// uPlot sets element styles from script (allowed); its legend and
		// cursor use no inline <style>.
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

func (h *handler) session(r *http.Request) (Session, string, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return Session{}, "", false
	}
	s, ok := h.cfg.Auth.Session(c.Value)
	return s, c.Value, ok
}

type pageData struct {
	Node, CSRF, Error string
	Expires           string
}

func (h *handler) render(w http.ResponseWriter, status int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, d); err != nil {
		h.cfg.Log.Warn("dashboard page", "page", name, "err", err)
	}
}

func (h *handler) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := h.session(r); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	h.render(w, http.StatusOK, "login.html", pageData{Node: h.cfg.Node})
}

func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		h.render(w, http.StatusBadRequest, "login.html", pageData{Node: h.cfg.Node, Error: "unreadable form"})
		return
	}
	cookie, s, err := h.cfg.Auth.Login(strings.TrimSpace(r.PostForm.Get("token")))
	if err != nil {
		status := http.StatusUnauthorized
		if !errors.Is(err, ErrBadToken) {
			status = http.StatusServiceUnavailable
		}
		h.cfg.Log.Warn("dashboard login refused", "remote", r.RemoteAddr, "err", err)
		h.render(w, status, "login.html", pageData{Node: h.cfg.Node, Error: "Login refused: " + err.Error() + ". Get a new token with: cacheplane ui-token"})
		return
	}
	h.cfg.Log.Info("dashboard login", "session", s.ID, "remote", r.RemoteAddr, "expires", s.Expires)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: cookie, Path: "/", MaxAge: int(h.cfg.Auth.remaining(s).Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	s, cookie, ok := h.session(r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	_ = r.ParseForm()
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		got = r.PostForm.Get("csrf")
	}
	if !sameToken(got, s.CSRF) {
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	h.cfg.Auth.Logout(cookie)
	h.cfg.Log.Info("dashboard logout", "session", s.ID)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (h *handler) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, _, ok := h.session(r)
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h.render(w, http.StatusOK, name, pageData{Node: h.cfg.Node, CSRF: s.CSRF, Expires: s.Expires.UTC().Format(time.RFC3339)})
	}
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":` + quote(msg) + `,"code":"` + code + `"}` + "\n"))
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// api serves the admin API to a session: /api/v1/... → /v1/....
func (h *handler) api(w http.ResponseWriter, r *http.Request) {
	s, _, ok := h.session(r)
	if !ok {
		apiError(w, http.StatusUnauthorized, "unauthorized", "no valid dashboard session: log in again (cacheplane ui-token)")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/api")
	if !allowed(r.Method, path) {
		apiError(w, http.StatusForbidden, "unauthorized", "not available from the dashboard: "+r.Method+" "+path)
		return
	}
	if needsCSRF(r.Method, path) && !sameToken(r.Header.Get(CSRFHeader), s.CSRF) {
		apiError(w, http.StatusForbidden, "unauthorized", "missing or wrong CSRF token")
		return
	}
	r2 := r.Clone(context.WithValue(r.Context(), sessionKey{}, s.ID))
	r2.URL.Path = path
	r2.URL.RawPath = ""
	r2.RequestURI = ""
	r2.Header.Del("Cookie")
	w.Header().Set("Cache-Control", "no-store")
	h.cfg.API.ServeHTTP(w, r2)
}

// RevealPath is the one read that needs the CSRF token and is audited: it
// answers the app's URL with its password.
const RevealPath = "/v1/env"

func needsCSRF(method, path string) bool {
	return (method != http.MethodGet && method != http.MethodHead) || path == RevealPath
}

// allowed keeps the agents' endpoints, cluster membership changes and the
// peer-internal ones off the dashboard.
func allowed(method, path string) bool {
	if !strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/v1/agent/") || strings.HasPrefix(path, "/v1/internal/") || path == TokenPath {
		return false
	}
	if strings.HasPrefix(path, "/v1/cluster") && method != http.MethodGet {
		return false
	}
	return true
}
