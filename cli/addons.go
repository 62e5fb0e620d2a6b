package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

func plansCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "addons-plans [redis]",
		Short: "List the plans an addon can have",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] != api.AddonType {
				return api.Invalidf("unknown addon type %q: the only type is %q", args[0], api.AddonType)
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			plans, err := g.client().Plans(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), plans)
			}
			rows := make([][]string, 0, len(plans))
			for _, p := range plans {
				ha := "no"
				if p.Kind == api.PlanBusiness {
					ha = "yes (2 redis, 3 sentinels, 2 haproxy)"
				}
				rows = append(rows, []string{p.Name, fmt.Sprintf("%d MB", p.MemoryMB), ha, yesNo(p.Backups)})
			}
			return printTable(cmd.OutOrStdout(), []string{"PLAN", "MEMORY", "HIGH AVAILABILITY", "BACKUPS"}, rows)
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func addonsAddCmd(g *globals) *cobra.Command {
	var app, version, requestID string
	var memberTLS bool
	cmd := &cobra.Command{
		Use:     "addons-add --app APP redis PLAN",
		Short:   "Add a caching database to an app",
		Example: "  cacheplane addons-add --app my-app redis redis-starter-256",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return api.Invalidf("addons-add takes the addon type and the plan: addons-add --app APP redis PLAN (see addons-plans)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			req := api.AddonCreateRequest{App: app, Type: args[0], Plan: args[1], RequestID: requestID}
			if cmd.Flags().Changed("member-tls") {
				req.MemberTLS = &memberTLS
			}
			if version != "" {
				if e, v, ok := strings.Cut(version, "-"); ok {
					req.Engine, req.Version = api.Engine(e), v
				} else if version == string(api.EngineRedis) || version == string(api.EngineValkey) {
					req.Engine = api.Engine(version)
				} else {
					req.Version = version
				}
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().AddonCreate(ctx, req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "-----> %s\n", res.Message)
			fmt.Fprintf(cmd.OutOrStdout(), "       Engine %s %s. Follow it with: cacheplane operations --app %s\n", res.Addon.Engine, res.Addon.Version, res.Addon.App)
			fmt.Fprintf(cmd.OutOrStdout(), "       Once running, get its URL with: cacheplane env --app %s\n", res.Addon.App)
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().StringVar(&version, "engine", "", "engine and version, e.g. redis-7.0.15 or valkey (default: the catalog's default)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: retrying with the same key never adds twice")
	cmd.Flags().BoolVar(&memberTLS, "member-tls", false, "redis, replication and sentinels speak TLS only (chosen at creation; default: the coordinator's member_tls)")
	return cmd
}

func addonsCmd(g *globals) *cobra.Command {
	var app string
	var stale bool
	cmd := &cobra.Command{
		Use:   "addons [--app APP]",
		Short: "List addons (of one app with --app)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if app != "" {
				if err := api.ValidateAppName(app); err != nil {
					return err
				}
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			addons, err := g.client().Addons(ctx, app, stale)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), addons)
			}
			if len(addons) == 0 {
				if app != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "No addon for app %s. Add one with: cacheplane addons-add --app %s redis PLAN\n", app, app)
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "No addon yet.")
				}
				return nil
			}
			rows := make([][]string, 0, len(addons))
			header := []string{"ADDON", "ID", "PLAN", "STATUS"}
			if app == "" {
				header = []string{"APP", "ADDON", "ID", "PLAN", "STATUS"}
			}
			for _, a := range addons {
				row := []string{"Redis", a.ID, a.Plan, string(a.Status)}
				if app == "" {
					row = append([]string{a.App}, row...)
				}
				rows = append(rows, row)
			}
			return printTable(cmd.OutOrStdout(), header, rows)
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().BoolVar(&stale, "stale", false, "read this member's own state instead of asking the leader")
	return cmd
}

func addonsRemoveCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "addons-remove --app APP ADDON_ID",
		Short: "Remove an addon: stops its members and deletes its data",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return api.Invalidf("addons-remove takes the addon id: addons-remove --app APP ADDON_ID (see addons --app APP)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().AddonRemove(ctx, app, args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "-----> %s\n", res.Message)
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	return cmd
}

func envCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "env --app APP",
		Short: "Print the app's environment: REDIS_URL and <PREFIX>_REDIS_URL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			env, err := g.client().Env(ctx, app)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), env)
			}
			for _, v := range env.Vars {
				fmt.Fprintf(cmd.OutOrStdout(), "%s=%s\n", v.Name, v.Value)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	return cmd
}

func settingsCmd(g *globals) *cobra.Command {
	var app, persistence, cacheMode, entrypoint, forceTLS, internet string
	cmd := &cobra.Command{
		Use:   "addons-settings --app APP [--persistence rdb|aof] [--cache-mode on|off] [--entrypoint haproxy|kernel] [--force-tls on|off] [--internet-access on|off]",
		Short: "Show or change an addon's settings, live (no restart, no data loss)",
		Example: "  cacheplane addons-settings --app my-app --persistence aof\n" +
			"  cacheplane addons-settings --app my-app --cache-mode on\n" +
			"  cacheplane addons-settings --app my-app --entrypoint kernel\n" +
			"  cacheplane addons-settings --app my-app --force-tls on --internet-access on",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			c := g.client()
			if persistence == "" && cacheMode == "" && entrypoint == "" && forceTLS == "" && internet == "" {
				addons, err := c.Addons(ctx, app, false)
				if err != nil {
					return err
				}
				if len(addons) == 0 {
					return fmt.Errorf("%w: app %s has no redis addon", api.ErrNotFound, app)
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), addons[0].Settings)
				}
				s := addons[0].Settings
				return printTable(cmd.OutOrStdout(), []string{"SETTING", "VALUE"}, [][]string{
					{"persistence", s.Persistence}, {"cache mode", onOff(s.CacheMode)}, {"force TLS", onOff(s.ForceTLS)},
					{"entrypoint", s.EntrypointMode()}, {"internet access", onOff(s.InternetAccess)},
				})
			}
			req := api.SettingsRequest{App: app}
			if persistence != "" {
				req.Persistence = &persistence
			}
			for _, sw := range []struct {
				flag, val string
				to        **bool
			}{{"cache-mode", cacheMode, &req.CacheMode}, {"force-tls", forceTLS, &req.ForceTLS}, {"internet-access", internet, &req.InternetAccess}} {
				if sw.val == "" {
					continue
				}
				var on bool
				switch sw.val {
				case "on", "true", "yes":
					on = true
				case "off", "false", "no":
				default:
					return api.Invalidf("--%s %q: use on or off", sw.flag, sw.val)
				}
				*sw.to = &on
			}
			if entrypoint != "" {
				req.Entrypoint = &entrypoint
			}
			res, err := c.AddonSettings(ctx, req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "-----> %s\n", res.Message)
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().StringVar(&persistence, "persistence", "", "rdb (snapshots) or aof (every write synced)")
	cmd.Flags().StringVar(&cacheMode, "cache-mode", "", "on: evict least recently used keys at the plan's memory; off: refuse writes with OOM")
	cmd.Flags().StringVar(&forceTLS, "force-tls", "", "on: refuse plaintext clients, the URL becomes rediss:// (TLS is always available beside plaintext); off: both")
	cmd.Flags().StringVar(&internet, "internet-access", "", "on: also publish the entrypoint on each entrypoint host's public address (use with --force-tls on); off: private network only")
	cmd.Flags().StringVar(&entrypoint, "entrypoint", "", "haproxy: every connection through the HAProxy pair; kernel: the VIP holder's kernel forwards connections to the primary (docs/entrypoint.md)")
	return cmd
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func addonsCACmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "addons-ca --app APP",
		Short: "Print the CA certificate (PEM) that an app's clients verify its addon's TLS with (rediss://)",
		Example: "  cacheplane addons-ca --app my-app > ca.pem\n" +
			"  redis-cli --tls --cacert ca.pem -u \"$(cacheplane env --app my-app | sed -n 's/^REDIS_URL=//p')\" PING",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := g.client().AddonCA(ctx, app)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), res.CAPEM)
			return err
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	return cmd
}

func addonsInfoCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "addons-info --app APP",
		Short: "Show an addon: plan, engine, status, entrypoint, settings and every member (current primary, entrypoint holder)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			a, err := g.client().AddonOfApp(ctx, app)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), a)
			}
			w := cmd.OutOrStdout()
			if err := printTable(w, []string{"ADDON", "VALUE"}, [][]string{
				{"id", a.ID}, {"app", a.App}, {"plan", a.Plan}, {"engine", string(a.Engine) + " " + a.Version},
				{"status", string(a.Status)}, {"health", orDash(a.Health)}, {"entrypoint", orDash(a.Entrypoint)},
				{"persistence", a.Settings.Persistence}, {"cache mode", onOff(a.Settings.CacheMode)},
				{"force TLS", onOff(a.Settings.ForceTLS)}, {"internet access", onOff(a.Settings.InternetAccess)},
				{"member TLS", onOff(a.Settings.MemberTLS)},
				{"created", a.CreatedAt.Local().Format("2006-01-02 15:04:05")},
			}); err != nil {
				return err
			}
			if a.Settings.InternetAccess && !a.Settings.ForceTLS {
				fmt.Fprintln(w, "Warning: internet access is on without force TLS: clients not using rediss:// send the password and data over the internet in plaintext (turn on: cacheplane addons-settings --app "+a.App+" --force-tls on)")
			}
			rows := make([][]string, 0, len(a.Members))
			for _, m := range a.Members {
				role := string(m.Role)
				switch {
				case m.Role == api.RoleRedis && m.RedisRole != "":
					role += " (" + m.RedisRole + ")"
				case m.Role == api.RoleHAProxy && m.Active:
					role += " (holds entrypoint)"
				}
				if m.Engine != "" { // an engine upgrade under way
					role += fmt.Sprintf(" [%s %s]", m.Engine, m.Version)
				}
				if m.Stopped {
					role += " [stopped]"
				}
				rows = append(rows, []string{m.ID, role, m.HostID, fmt.Sprintf("%s:%d", orDash(m.Address), m.Port), orDash(m.State)})
			}
			return printTable(w, []string{"MEMBER", "ROLE", "HOST", "ADDRESS", "STATE"}, rows)
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	return cmd
}
