package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
)

// addonsPasswordRotateCmd is addons-password-rotate: a new app password
// without a failed command (docs/security.md, Password rotation).
func addonsPasswordRotateCmd(g *globals) *cobra.Command {
	var (
		app    string
		grace  time.Duration
		finish bool
	)
	cmd := &cobra.Command{
		Use:   "addons-password-rotate --app APP [--grace 24h] [--finish]",
		Short: "Give the app's addon a new password; the old one keeps working for a grace period",
		Long: `Give the app's addon a new password, without a failed command. The coordinator draws a
new password; every redis node accepts it beside the current one (live, no restart); then
"env" prints the URL with the new password and the app hook (if configured) is told. The
old password keeps working for the grace period (--grace, default the coordinator's
password_grace, 24h), then it is removed from every node. The rotation itself ends once
the app is told: during the grace period healing, plan changes, upgrades and backups of the
addon run as usual (a member replaced or restarted then accepts both passwords); removing
the old password waits for such an operation to end. Connections already open stay open.
--finish ends the grace period now. One rotation at a time: a second one is refused while
one runs or its grace period lasts (--finish it first).`,
		Example: "  cacheplane addons-password-rotate --app my-app\n" +
			"  cacheplane addons-password-rotate --app my-app --grace 1h\n" +
			"  cacheplane addons-password-rotate --app my-app --finish",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.PasswordRotateRequest{App: app, Grace: api.Duration(grace), Finish: finish}
			if err := req.Validate(); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			c := g.client()
			addons, err := c.Addons(ctx, app, false)
			if err != nil {
				return err
			}
			if len(addons) == 0 {
				return fmt.Errorf("%w: app %s has no redis addon", api.ErrNotFound, app)
			}
			res, err := c.AddonPasswordRotate(ctx, addons[0].ID, req)
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
	cmd.Flags().DurationVar(&grace, "grace", 0, "how long the old password keeps working once the new URL is published (default: the coordinator's password_grace, 24h)")
	cmd.Flags().BoolVar(&finish, "finish", false, "end the grace period now: the old password is removed")
	return cmd
}
