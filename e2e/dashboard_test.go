package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// chromiumPath is Debian's chromium (scripts/deps-system.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// TestDashboard drives the web dashboard in headless Chromium against a
// real coordinator and agents with a business addon: ui-token, login, the
// overview lists the addon, the addon page draws non-empty charts, shows
// the new primary within seconds of a kill -9 of the primary's redis,
// switches cache mode from the page (checked with CONFIG GET on every
// redis member), never shows the password unless revealed (audited), and
// logout ends the session. Any JavaScript console error fails it.
// Screenshots go to $CACHEPLANE_ARTIFACTS (default a temp dir, logged).
func TestDashboard(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v (install it: scripts/deps-system.sh)", chromiumPath, err)
	}
	ln, err := net.Listen("tcp", bizCoordIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	dashAddr := ln.Addr().String()
	ln.Close()
	f := startBusiness(t, "dash", bizOpts{CoordArgs: []string{"--dashboard-listen", dashAddr}})
	base := "http://" + dashAddr
	password := passwordOf(t, f.url)
	art := artifactsDir(t)

	// --- ui-token on the admin socket
	res := f.c.CLI("ui-token", "--ttl", "10m", "--json")
	if res.Code != 0 {
		t.Fatalf("ui-token: %s", res)
	}
	token := jsonField(t, res.Stdout, "token")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1100), chromedp.Flag("disable-gpu", true))
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	// Every console error, uncaught exception and browser log error (a
	// failed load, a CSP violation) fails the test.
	var (
		consoleMu sync.Mutex
		console   []string
	)
	messages := chromedp.Console(bctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			// The one refusal the test asks for (undrain of a ready host:
			// 409) is a failed load in Chrome's log; nothing else may be.
			expected := m.Source == "network" && strings.HasSuffix(m.URL, "/undrain")
			if (m.Type == chromedp.ConsoleError || m.IsException()) && !expected {
				consoleMu.Lock()
				console = append(console, m.String()+" at "+m.URL)
				consoleMu.Unlock()
			}
		}
	}()
	defer func() {
		cancelB()
		select {
		case <-consoleDone:
		case <-time.After(5 * time.Second):
			t.Error("console reader did not stop")
		}
		consoleMu.Lock()
		defer consoleMu.Unlock()
		for _, m := range console {
			t.Errorf("browser console: %s", m)
		}
	}()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	evalBool := func(js string) (bool, error) { return chromedp.Run(bctx, chromedp.Evaluate[bool](js)) }
	evalInt := func(js string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return n
	}
	// waitJS polls a JS expression until it is true; on timeout it logs
	// the page's status line and what its charts hold.
	waitJS := func(what, js string, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			ok, err := evalBool(js)
			if err == nil && ok {
				return time.Since(start)
			}
			if time.Since(start) > timeout {
				diag, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify({status: (document.getElementById("status") || {}).textContent, `+
					`url: location.href, charts: Object.fromEntries(Object.entries((typeof cp !== "undefined" && cp.charts) || {}).map(([k, c]) => [k, c.data]))})`))
				t.Fatalf("%s: not within %s (last error %v); page: %.3000s", what, timeout, err, diag)
			}
			time.Sleep(100 * time.Millisecond) // polling interval, not a synchronisation
		}
	}
	shot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(art, name+".png")
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
	noPassword := func(page string) {
		t.Helper()
		html, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatalf("read %s: %v", page, err)
		}
		if strings.Contains(html, password) {
			t.Errorf("%s shows the app's password", page)
		}
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// --- before login: the API refuses, pages send to the login
	if status := httpStatus(t, base+"/api/v1/addons", ""); status != http.StatusUnauthorized {
		t.Fatalf("API without a session: %d, want 401", status)
	}
	run("open login", chromedp.Navigate(base+"/addons/"+f.id), chromedp.WaitVisible(css("#token")))

	// --- login; the overview lists the addon and draws the hosts' charts
	run("login", chromedp.SendKeys(css("#token"), token), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#hosts")))
	waitJS("overview lists the addon", fmt.Sprintf(`document.querySelector("#addons tbody").textContent.includes(%q)`, f.id), 10*time.Second)
	waitJS("overview lists 4 hosts", `document.querySelectorAll("#hosts tbody tr").length === 4`, 10*time.Second)
	waitJS("host charts have data", chartHasData("chart-host-cpu")+" && "+chartHasData("chart-host-memory"), 15*time.Second)
	noPassword("overview")
	shot("dashboard-overview")

	// --- addon page: topology, masked URL, non-empty charts
	run("addon page", chromedp.Navigate(base+"/addons/"+f.id), chromedp.WaitVisible(css("#members")))
	old := f.primary()
	waitJS("primary shown", fmt.Sprintf(`document.getElementById("primary").textContent.startsWith(%q)`, old.ID), 10*time.Second)
	waitJS("entrypoint holder shown", fmt.Sprintf(`document.getElementById("holder").textContent.startsWith(%q)`, f.holder().ID), 10*time.Second)
	waitJS("masked url", `document.getElementById("url").textContent.includes("••••")`, 10*time.Second)
	for _, c := range []string{"chart-cpu", "chart-memory", "chart-disk"} {
		waitJS(c+" has data", chartHasData(c), 20*time.Second)
	}
	points := evalInt(`cp.charts["chart-memory"].data[0].length`)
	t.Logf("memory chart: %d points over the last hour", points)
	noPassword("addon page")

	// --- failover: kill -9 the primary's redis; the page shows the new one
	pid := f.pidOf(old.HostID, old.ID)
	if pid == 0 {
		t.Fatalf("primary %s has no running process", old.ID)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	var fsmAt time.Time
	testutil.WaitFor(t, 30*time.Second, func() error {
		a, err := f.addon()
		if err != nil {
			return err
		}
		for _, m := range membersOf(a, api.RoleRedis) {
			if m.RedisRole == "primary" && m.ID != old.ID {
				fsmAt = time.Now()
				return nil
			}
		}
		return errors.New("no new primary recorded yet")
	})
	newPrimary := f.primary()
	shown := waitJS("page shows the new primary", fmt.Sprintf(`document.getElementById("primary").textContent.startsWith(%q)`, newPrimary.ID), 5*time.Second)
	t.Logf("failover: new primary %s recorded %s after the kill; on the page %s later", newPrimary.ID,
		fsmAt.Sub(killed).Round(time.Millisecond), (shown + 0).Round(time.Millisecond))
	f.waitHealthy(60 * time.Second)
	shot("dashboard-addon")

	// --- settings switch from the page, with its confirmation
	run("switch cache mode", chromedp.Click(css("#switch-cache-mode")), chromedp.WaitVisible(css("#confirm-yes")),
		chromedp.Click(css("#confirm-yes")))
	waitJS("cache mode shown on", `document.getElementById("set-cache-mode").textContent === "on"`, 10*time.Second)
	testutil.WaitFor(t, 30*time.Second, func() error {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer ccancel()
		for _, m := range membersOf(f.mustAddon(), api.RoleRedis) {
			c := f.direct(f.memberAddr(m))
			got, err := c.ConfigGet(cctx, "maxmemory-policy").Result()
			c.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", m.ID, err)
			}
			if got["maxmemory-policy"] != "allkeys-lru" {
				return fmt.Errorf("%s: maxmemory-policy %q", m.ID, got["maxmemory-policy"])
			}
		}
		return nil
	})
	waitJS("settings operation shown done", `[...document.querySelectorAll("#operations summary")].some(s => s.textContent.includes("settings") && s.textContent.includes("done"))`, 20*time.Second)

	// --- the host page
	run("host page", chromedp.Navigate(base+"/hosts/"+newPrimary.HostID), chromedp.WaitVisible(css("#members")))
	waitJS("host members listed", fmt.Sprintf(`document.querySelector("#members tbody").textContent.includes(%q)`, newPrimary.ID), 10*time.Second)
	waitJS("host chart has data", chartHasData("chart-cpu"), 10*time.Second)
	noPassword("host page")
	// Undrain of a ready host: confirmed, sent, refused by the API's own
	// validation, its message shown.
	run("undrain", chromedp.Click(css("#undrain")), chromedp.WaitVisible(css("#confirm-yes")), chromedp.Click(css("#confirm-yes")))
	waitJS("undrain refused on the page", `document.getElementById("drain-message").textContent.includes("not draining")`, 10*time.Second)
	shot("dashboard-host")

	// --- reveal: explicit, audited
	run("addon page again", chromedp.Navigate(base+"/addons/"+f.id), chromedp.WaitVisible(css("#reveal")))
	waitJS("masked url", `document.getElementById("url").textContent.includes("••••")`, 10*time.Second)
	run("reveal", chromedp.Click(css("#reveal")), chromedp.WaitVisible(css("#confirm-yes")), chromedp.Click(css("#confirm-yes")))
	waitJS("revealed url", fmt.Sprintf(`document.getElementById("url").textContent === %q`, f.url), 10*time.Second)
	audit, err := os.ReadFile(filepath.Join(f.c.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"msg":"url revealed"`, `"path":"/v1/settings"`} {
		found := false
		for _, line := range strings.Split(string(audit), "\n") {
			if strings.Contains(line, want) && strings.Contains(line, `"who":"dashboard session `) {
				found = true
			}
		}
		if !found {
			t.Errorf("audit log has no %s line naming a dashboard session:\n%s", want, audit)
		}
	}
	if strings.Contains(string(audit), password) {
		t.Error("the audit log holds the password")
	}

	// --- logout ends the session: the browser's cookie is refused after it
	cookies, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	var session *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == dashboard.CookieName {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict || session.Session {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, with an expiry", session)
	}
	if status := httpStatus(t, base+"/api/v1/addons", session.Value); status != http.StatusOK {
		t.Fatalf("API with the session's cookie: %d", status)
	}
	run("logout", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#token")))
	if n := evalInt(`document.cookie.length`); n != 0 {
		t.Errorf("cookies readable from JS after logout: %d bytes", n)
	}
	if status := httpStatus(t, base+"/api/v1/addons", session.Value); status != http.StatusUnauthorized {
		t.Fatalf("API with the session's cookie after logout: %d, want 401", status)
	}
}

// chartHasData is a JS expression: chart id has x values and a line with a
// positive value.
func chartHasData(id string) string {
	return fmt.Sprintf(`(() => { const c = typeof cp !== "undefined" && cp.charts[%q]; return !!c && c.data[0].length > 0 && c.data.slice(1).some(s => s.some(v => v !== null && v > 0)); })()`, id)
}

// httpStatus GETs url outside the browser, with a session cookie when one
// is given.
func httpStatus(t *testing.T, url, cookie string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: cookie})
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func passwordOf(t *testing.T, url string) string {
	t.Helper()
	at := strings.LastIndexByte(url, '@')
	colon := strings.LastIndexByte(url[:at], ':')
	if at < 0 || colon < 0 {
		t.Fatalf("URL without a password")
	}
	return url[colon+1 : at]
}

func jsonField(t *testing.T, s, field string) string {
	t.Helper()
	key := `"` + field + `": "`
	i := strings.Index(s, key)
	if i < 0 {
		t.Fatalf("no %s in %s", field, s)
	}
	rest := s[i+len(key):]
	return rest[:strings.IndexByte(rest, '"')]
}

// artifactsDir is where screenshots go: $CACHEPLANE_ARTIFACTS/<test>, or a
// directory under the system's temp dir.
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("CACHEPLANE_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "cacheplane-artifacts")
	}
	dir := filepath.Join(root, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
