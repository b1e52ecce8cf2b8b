package daemon

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/errand-dev/errand/internal/config"
	"github.com/errand-dev/errand/jobs"
	"github.com/errand-dev/errand/migrations"
	"github.com/errand-dev/errand/store"
)

// Migrate is `errand migrate`: it applies the schema and publishes the kinds and settings.
func Migrate(ctx context.Context, cfg config.Config, reg *jobs.Registry, stdout io.Writer) error {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: int32(cfg.DBMaxConns), SkipScopeCheck: true})
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := migrations.Up(ctx, st.Pool(), nil)
	if err != nil {
		return err
	}
	if err := Publish(ctx, st, cfg, reg, store.Exact); err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "errand migrate: already up to date")
	} else {
		fmt.Fprintf(stdout, "errand migrate: applied %s\n", strings.Join(applied, ", "))
	}
	return nil
}
