package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/storage"
)

func storesCommand() *cli.Command {
	return &cli.Command{
		Name:  "stores",
		Usage: "list the configured stores, or probe what a store really does",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the stores named in the config file and environment",
				UsageText: `ehrport stores list [--json]

Example:
   EHRPORT_STORE_CLOUDA_ENDPOINT=https://s3.example.org ehrport stores list`,
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.Args().Present() {
						return usagef("stores list takes no arguments")
					}
					return (&storesListOptions{globals: g}).Run(c.Context)
				},
			},
			{
				Name:  "check",
				Usage: "probe a store: TLS, credentials, put/get/list/delete, checksum enforcement, versioning, object lock",
				UsageText: `ehrport stores check [--create] REF [REF...]

REF is NAME:bucket[/prefix] for a configured store, or a folder path.
The probe writes a few small objects under .ehrport-check-*/ and deletes them.
Later commands trust a server-verified SHA-256 only where this check saw the
server reject a wrong one; elsewhere they read data back.

Examples:
   ehrport stores check clouda:exports
   ehrport stores check --create cloudb:exit-2026
   ehrport --json stores check clouda:exports cloudb:exports`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "create", Usage: "create the bucket if it does not exist"},
				},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if !c.Args().Present() {
						return usagef("stores check needs a store reference, e.g. clouda:bucket")
					}
					return (&storesCheckOptions{globals: g, Refs: c.Args().Slice(), Create: c.Bool("create")}).Run(c.Context)
				},
			},
		},
	}
}

type storesListOptions struct {
	*globals
}

func (o *storesListOptions) Run(ctx context.Context) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	var stores []*storage.StoreConfig
	for _, name := range cfg.Names() {
		sc, _ := cfg.Lookup(name)
		stores = append(stores, sc)
	}
	if o.JSON {
		type entry struct {
			*storage.StoreConfig
			Credentials string `json:"credentials"`
		}
		out := []entry{}
		for _, sc := range stores {
			out = append(out, entry{sc, credentialSource(sc)})
		}
		return o.printJSON(map[string]any{"config_file": cfg.File, "stores": out})
	}
	if len(stores) == 0 {
		fmt.Fprintln(o.Stdout, "No stores configured. Define [stores.NAME] in ehrport.toml or set EHRPORT_STORE_<NAME>_ENDPOINT (see docs/config.md).")
		return nil
	}
	tw := tabwriter.NewWriter(o.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tENDPOINT OR PATH\tREGION\tCREDENTIALS\tCA BUNDLE\tFROM")
	for _, sc := range stores {
		where := sc.Endpoint
		if sc.Type == "local" {
			where = sc.Path
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sc.Name, sc.Type, where, dash(sc.Region), credentialSource(sc), dash(sc.CACert), sc.Source)
	}
	return tw.Flush()
}

// credentialSource says where a store's credentials come from, never what
// they are.
func credentialSource(sc *storage.StoreConfig) string {
	switch {
	case sc.Type == "local":
		return "-"
	case sc.AccessKey != "":
		return "access key " + maskKeyID(sc.AccessKey)
	}
	return "AWS environment or shared credentials file"
}

// maskKeyID shows enough of an access key id to tell keys apart.
func maskKeyID(id string) string {
	if len(id) <= 4 {
		return "****"
	}
	return id[:4] + "****"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type storesCheckOptions struct {
	*globals
	Refs   []string
	Create bool
}

func (o *storesCheckOptions) Run(ctx context.Context) error {
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	// Parse every reference first, so a typo fails before any probe runs.
	var stores []storage.Store
	for _, r := range o.Refs {
		ref, err := storage.ParseRef(r)
		if err != nil {
			return err
		}
		st, err := storage.Open(cfg, ref)
		if err != nil {
			return err
		}
		stores = append(stores, st)
	}
	var all []*storage.Capabilities
	failed := false
	for _, st := range stores {
		o.Log.Debug("probing store", "store", st.Location())
		caps, err := storage.Check(ctx, st, storage.CheckOptions{CreateBucket: o.Create})
		if err != nil {
			return err
		}
		all = append(all, caps)
		failed = failed || !caps.OK
		if !o.JSON {
			printCapabilities(o.Stdout, caps)
		}
	}
	if o.JSON {
		if err := o.printJSON(map[string]any{"stores": all}); err != nil {
			return err
		}
	}
	if failed {
		if !o.JSON {
			fmt.Fprintln(o.Stderr, "ehrport: a required check failed: this store cannot hold an export safely")
		}
		return ErrFindings
	}
	return nil
}

func printCapabilities(w io.Writer, caps *storage.Capabilities) {
	fmt.Fprintf(w, "STORE %s (%s)\n", caps.Location, caps.Kind)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, r := range caps.Checks {
		res := r.Result
		if r.Required && !r.Passed {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, res, r.Detail)
	}
	tw.Flush()
	verdict := "server-verified SHA-256 will be trusted"
	if !caps.VerifiesChecksums {
		verdict = "integrity will be proven by reading data back"
	}
	if caps.Kind == "local" {
		verdict = "local folder: integrity proven by hashing what is read"
	}
	fmt.Fprintf(w, "=> %s; %s\n\n", map[bool]string{true: "usable", false: "NOT usable"}[caps.OK], verdict)
}
