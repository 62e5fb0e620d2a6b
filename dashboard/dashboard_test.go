package dashboard

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const testPassword = "pw-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// fakeAPI stands in for the admin API: it records what reached it and
// answers /v1/env with a URL holding a password (as the real one does).
type fakeAPI struct {
	mu   sync.Mutex
	seen []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, _ := SessionID(r.Context())
	f.mu.Lock()
	f.seen = append(f.seen, r.Method+" "+r.URL.Path+" "+id)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/env":
		_, _ = io.WriteString(w, `{"vars":[{"name":"REDIS_URL","value":"redis://default:`+testPassword+`@127.0.0.1:1"}]}`)
	case "/v1/addons":
		_, _ = io.WriteString(w, `[{"id":"a-1","app":"a"}]`)
	default:
		_, _ = io.WriteString(w, `{}`)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t    *testing.T
	clk  *clock
	auth *Auth
	api  *fakeAPI
	srv  *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	clk := &clock{t: time.Now()}
	f := &fixture{t: t, clk: clk, auth: NewAuth(clk.now), api: &fakeAPI{}}
	f.srv = httptest.NewServer(Handler(Config{Auth: f.auth, API: f.api, Node: "c1"}))
	t.Cleanup(f.srv.Close)
	return f
}

// client returns an HTTP client with a cookie jar that does not follow
// redirects.
func (f *fixture) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (f *fixture) login(c *http.Client, ttl time.Duration) (csrf string) {
	f.t.Helper()
	tok, _, err := f.auth.IssueToken(ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := c.PostForm(f.srv.URL+"/login", url.Values{"token": {tok}})
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		f.t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == CookieName {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.MaxAge <= 0 {
		f.t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, an expiry", ck)
	}
	body, status := f.get(c, "/", nil)
	if status != http.StatusOK {
		f.t.Fatalf("overview after login: %d", status)
	}
	const meta = `<meta name="csrf" content="`
	i := strings.Index(body, meta)
	if i < 0 {
		f.t.Fatal("page has no CSRF token")
	}
	rest := body[i+len(meta):]
	return rest[:strings.IndexByte(rest, '"')]
}

func (f *fixture) do(c *http.Client, method, path string, hdr map[string]string) (string, int) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(`{}`))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func (f *fixture) get(c *http.Client, path string, hdr map[string]string) (string, int) {
	return f.do(c, http.MethodGet, path, hdr)
}

func TestNoSessionRefused(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/api/v1/addons", http.StatusUnauthorized},
		{"POST", "/api/v1/settings", http.StatusUnauthorized},
		{"GET", "/api/v1/env?app=a", http.StatusUnauthorized},
		{"GET", "/", http.StatusSeeOther},
		{"GET", "/addons/a-1", http.StatusSeeOther},
		{"GET", "/hosts/h1", http.StatusSeeOther},
		{"GET", "/login", http.StatusOK},
		{"GET", "/assets/app.js", http.StatusOK},
	} {
		if _, got := f.do(c, tc.method, tc.path, nil); got != tc.status {
			t.Errorf("%s %s without a session: %d, want %d", tc.method, tc.path, got, tc.status)
		}
	}
	// A made-up cookie is no session.
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/addons", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: "forged"})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged cookie: %d", resp.StatusCode)
	}
	if len(f.api.seen) != 0 {
		t.Errorf("the API was reached without a session: %v", f.api.seen)
	}
}

func TestLoginTokenOneTimeAndExpiry(t *testing.T) {
	f := newFixture(t)
	tok, _, err := f.auth.IssueToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.auth.Login(tok); err != nil {
		t.Fatalf("first login: %v", err)
	}
	if _, _, err := f.auth.Login(tok); err == nil {
		t.Fatal("a token logged in twice")
	}
	tok2, _, _ := f.auth.IssueToken(time.Minute)
	f.clk.add(2 * time.Minute)
	if _, _, err := f.auth.Login(tok2); err == nil {
		t.Fatal("an expired token logged in")
	}
	for _, ttl := range []time.Duration{0, time.Second, 8 * 24 * time.Hour} {
		if _, _, err := f.auth.IssueToken(ttl); err == nil {
			t.Errorf("ttl %s accepted", ttl)
		}
	}
	// A wrong token on the form: 401 and the login page again.
	body, status := f.do(f.client(), "POST", "/login", nil)
	if status != http.StatusUnauthorized || !strings.Contains(body, "ui-token") {
		t.Errorf("bad login: %d %q", status, body)
	}
}

func TestSessionExpiresAndLogout(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	f.login(c, 10*time.Minute)
	if _, st := f.get(c, "/api/v1/addons", nil); st != http.StatusOK {
		t.Fatalf("with a session: %d", st)
	}
	f.clk.add(11 * time.Minute)
	if _, st := f.get(c, "/api/v1/addons", nil); st != http.StatusUnauthorized {
		t.Fatalf("expired session: %d, want 401", st)
	}
	if _, st := f.get(c, "/", nil); st != http.StatusSeeOther {
		t.Fatalf("page with an expired session: %d, want a redirect to the login", st)
	}

	c = f.client()
	csrf := f.login(c, time.Hour)
	u, _ := url.Parse(f.srv.URL)
	kept := c.Jar.Cookies(u)
	// Logout needs the CSRF token.
	if _, st := f.do(c, "POST", "/logout", nil); st != http.StatusForbidden {
		t.Fatalf("logout without CSRF: %d", st)
	}
	if _, st := f.do(c, "POST", "/logout", map[string]string{CSRFHeader: csrf}); st != http.StatusSeeOther {
		t.Fatalf("logout: %d", st)
	}
	// The browser forgets the cookie; one who kept it cannot use it.
	if len(c.Jar.Cookies(u)) != 0 {
		t.Error("logout left the cookie in the browser")
	}
	c2 := f.client()
	c2.Jar.SetCookies(u, kept)
	if _, st := f.get(c2, "/api/v1/addons", nil); st != http.StatusUnauthorized {
		t.Fatalf("the session's cookie after logout: %d, want 401", st)
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	csrf := f.login(c, time.Hour)
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"POST", "/api/v1/settings", "", http.StatusForbidden},
		{"POST", "/api/v1/settings", "wrong", http.StatusForbidden},
		{"POST", "/api/v1/settings", csrf, http.StatusOK},
		{"POST", "/api/v1/hosts/h1/drain", "", http.StatusForbidden},
		{"DELETE", "/api/v1/addons/a-1", "", http.StatusForbidden},
		{"GET", "/api/v1/env?app=a", "", http.StatusForbidden},
		{"GET", "/api/v1/env?app=a", csrf, http.StatusOK},
		{"GET", "/api/v1/addons", "", http.StatusOK},
		// Never through the dashboard, token or not.
		{"POST", "/api/v1/agent/heartbeat", csrf, http.StatusForbidden},
		{"POST", "/api/v1/cluster/recover", csrf, http.StatusForbidden},
		{"POST", "/api/v1/ui/token", csrf, http.StatusForbidden},
	} {
		hdr := map[string]string{}
		if tc.token != "" {
			hdr[CSRFHeader] = tc.token
		}
		if _, st := f.do(c, tc.method, tc.path, hdr); st != tc.status {
			t.Errorf("%s %s (csrf %q): %d, want %d", tc.method, tc.path, tc.token, st, tc.status)
		}
	}
	f.api.mu.Lock()
	defer f.api.mu.Unlock()
	want := map[string]bool{"POST /v1/settings": true, "GET /v1/env": true, "GET /v1/addons": true}
	for _, s := range f.api.seen {
		parts := strings.Fields(s)
		if len(parts) != 3 || !want[parts[0]+" "+parts[1]] {
			t.Errorf("reached the API: %q", s)
		}
	}
}

// The pages never carry a password: not the HTML, not the scripts; only
// the explicit reveal (CSRF-checked, audited by the coordinator) answers it.
func TestPasswordNeverInAPage(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	f.login(c, time.Hour)
	if body, _ := f.get(f.client(), "/login", nil); strings.Contains(body, testPassword) {
		t.Error("the login page shows the password")
	}
	for _, p := range []string{"/", "/addons/a-1", "/hosts/h1", "/assets/app.js", "/assets/addon.js", "/assets/overview.js", "/assets/host.js", "/api/v1/addons"} {
		body, st := f.get(c, p, nil)
		if st != http.StatusOK {
			t.Errorf("%s: %d", p, st)
		}
		if strings.Contains(body, testPassword) {
			t.Errorf("%s shows the password", p)
		}
	}
}

func TestMakeCharts(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(1000+s), 0) }
	c := MakeCharts(WindowHour, map[string][]Point{
		"m2": {{At: at(5), CPU: 2, Memory: 20}},
		"m1": {{At: at(0), CPU: 1, Memory: 10}, {At: at(5), CPU: 3, Memory: 30}},
	})
	if got := c.Memory.X; len(got) != 2 || got[0] != 1000 || got[1] != 1005 {
		t.Fatalf("x = %v", got)
	}
	if l := c.Memory.Lines; len(l) != 2 || l[0].Label != "m1" || l[1].Label != "m2" {
		t.Fatalf("lines = %+v", l)
	}
	m2 := c.CPU.Lines[1].Values
	if m2[0] != nil || m2[1] == nil || *m2[1] != 2 {
		t.Fatalf("m2 cpu = %v", m2)
	}
	if e := MakeCharts(WindowDay, nil); e.CPU.X == nil || e.CPU.Lines == nil {
		t.Fatal("an empty chart must encode as [] (uPlot wants arrays)")
	}
}
