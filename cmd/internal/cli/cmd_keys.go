package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/crypto/kms"
)

const passphraseHelp = `The passphrase is read from EHRPORT_PASSPHRASE, or asked for without echo
when a terminal is attached; it is never taken from the command line.`

func keysDirFlag(usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: "keys", Usage: usage, TakesFile: true}
}

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "create and manage the hospital's keys: KEK, HPKE recipient key, signing key",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create a key directory: a KEK keyset, an HPKE keypair and an Ed25519 signing keyset",
				UsageText: `ehrport keys init --keys DIR [--kms URI]

Example:
   EHRPORT_PASSPHRASE=... ehrport keys init --keys ./hospital-keys
   ehrport keys init --keys ./hospital-keys --kms aws-kms://arn:aws:kms:eu-west-1:111122223333:key/abcd`,
				Description: `Secret key files (kek.json, hpke.json, signing.json) are written with mode
0600, encrypted at rest under a key derived from a passphrase with argon2id
(parameters recorded in each file) or under a KMS key (--kms). The public
halves (hpke.pub.json, signing.pub.json) are written beside them.
` + passphraseHelp + ` See docs/keys.md.`,
				Flags: []cli.Flag{
					keysDirFlag("create the key directory `DIR`"),
					&cli.StringFlag{Name: "kms", Usage: "protect the key files with the KMS key `URI` (aws-kms://, gcp-kms://, hcvault://) instead of a passphrase"},
				},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.Args().Present() {
						return usagef("keys init takes no arguments")
					}
					return (&keysInitOptions{globals: g, Dir: c.String("keys"), KMS: c.String("kms")}).Run(c.Context)
				},
			},
			{
				Name:  "public",
				Usage: "write the public recipient and signature-verification keysets",
				UsageText: `ehrport keys public --keys DIR [--out OUTDIR]

Examples:
   ehrport keys public --keys ./hospital-keys > hospital.pub.json
   ehrport keys public --keys ./hospital-keys --out ./to-provider`,
				Description: `Without --out, prints the public HPKE recipient keyset (what an exporting
provider needs to encrypt for the hospital) on stdout. With --out, writes
hpke.pub.json and signing.pub.json into OUTDIR. Needs no passphrase.`,
				Flags: []cli.Flag{
					keysDirFlag("the key directory `DIR`"),
					&cli.StringFlag{Name: "out", Usage: "write both public keysets into `OUTDIR`", TakesFile: true},
				},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.Args().Present() {
						return usagef("keys public takes no arguments")
					}
					return (&keysPublicOptions{globals: g, Dir: c.String("keys"), Out: c.String("out")}).Run(c.Context)
				},
			},
			{
				Name:  "list",
				Usage: "list key ids, types, status and creation dates (never a secret)",
				UsageText: `ehrport keys list --keys DIR

Example:
   ehrport --json keys list --keys ./hospital-keys`,
				Description: "Needs no passphrase: ids and statuses are stored in the clear beside the encrypted keysets.",
				Flags:       []cli.Flag{keysDirFlag("the key directory `DIR`")},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.Args().Present() {
						return usagef("keys list takes no arguments")
					}
					return (&keysListOptions{globals: g, Dir: c.String("keys")}).Run(c.Context)
				},
			},
			{
				Name:  "rotate",
				Usage: "add a new primary KEK; older KEKs stay for decryption",
				UsageText: `ehrport keys rotate --keys DIR

Example:
   ehrport keys rotate --keys ./hospital-keys`,
				Description: `New objects are wrapped with the new KEK. Existing objects still open with
the old one; rewrap them (ehrport rewrap) and then disable the old key.
` + passphraseHelp,
				Flags: []cli.Flag{keysDirFlag("the key directory `DIR`")},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.Args().Present() {
						return usagef("keys rotate takes no arguments")
					}
					return (&keysRotateOptions{globals: g, Dir: c.String("keys")}).Run(c.Context)
				},
			},
			{
				Name:  "disable",
				Usage: "disable a key by id: it can no longer decrypt, sign or verify",
				UsageText: `ehrport keys disable --keys DIR ID

Example:
   ehrport keys disable --keys ./hospital-keys 1234567890`,
				Description: "A primary key cannot be disabled; rotate first. " + passphraseHelp,
				Flags:       []cli.Flag{keysDirFlag("the key directory `DIR`")},
				Action: func(c *cli.Context) error {
					g, err := globalsFrom(c)
					if err != nil {
						return err
					}
					if c.NArg() != 1 {
						return usagef("keys disable needs exactly one key id (see ehrport keys list)")
					}
					id, err := strconv.ParseUint(c.Args().First(), 10, 32)
					if err != nil {
						return usagef("key id %q is not a number", c.Args().First())
					}
					return (&keysDisableOptions{globals: g, Dir: c.String("keys"), ID: uint32(id)}).Run(c.Context)
				},
			},
		},
	}
}

// passphraseSource returns a function that reads the passphrase from the
// environment variables in order, or else asks on the terminal. It never
// logs or echoes it.
func passphraseSource(label string, confirm bool, envs ...string) func() ([]byte, error) {
	return func() ([]byte, error) {
		for _, e := range envs {
			if v, ok := os.LookupEnv(e); ok && v != "" {
				return []byte(v), nil
			}
		}
		tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
		if err != nil || !term.IsTerminal(int(tty.Fd())) {
			if tty != nil {
				tty.Close()
			}
			return nil, usagef("no passphrase for %s: set %s or run on a terminal", label, envs[0])
		}
		defer tty.Close()
		p, err := readSecret(tty, fmt.Sprintf("Passphrase for %s: ", label))
		if err != nil {
			return nil, usagef("reading passphrase: %v", err)
		}
		if confirm {
			q, err := readSecret(tty, "Repeat passphrase: ")
			if err != nil || string(p) != string(q) {
				return nil, usagef("passphrases do not match")
			}
		}
		return p, nil
	}
}

func unlockFor(ctx context.Context, dir string, confirm bool, envs ...string) keys.Unlock {
	return keys.Unlock{
		Passphrase: passphraseSource(dir, confirm, envs...),
		KMS:        func(uri string) (tink.AEAD, error) { return kms.AEAD(ctx, uri) },
	}
}

func openKeys(ctx context.Context, dir string, envs ...string) (*keys.Dir, error) {
	if dir == "" {
		return nil, usagef("--keys DIR is required")
	}
	if len(envs) == 0 {
		envs = []string{"EHRPORT_PASSPHRASE"}
	}
	return keys.Open(dir, unlockFor(ctx, dir, false, envs...))
}

type keysInitOptions struct {
	*globals
	Dir string
	KMS string
}

func (o *keysInitOptions) Run(ctx context.Context) error {
	if o.Dir == "" {
		return usagef("--keys DIR is required")
	}
	if o.KMS != "" && !kms.Supported(o.KMS) {
		return fmt.Errorf("%w: --kms %q: want aws-kms://, gcp-kms:// or hcvault://", ehrcrypto.ErrPolicy, o.KMS)
	}
	d, err := keys.Init(o.Dir, unlockFor(ctx, o.Dir, true, "EHRPORT_PASSPHRASE"), keys.InitOptions{KMSURI: o.KMS})
	if err != nil {
		return err
	}
	list, err := d.List()
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"dir": o.Dir, "keys": list})
	}
	prot := "a passphrase (argon2id)"
	if o.KMS != "" {
		prot = "KMS key " + o.KMS
	}
	fmt.Fprintf(o.Stdout, "Created key directory %s, secret files protected by %s:\n", o.Dir, prot)
	printKeys(o.Stdout, list)
	fmt.Fprintf(o.Stdout, "Give %s to parties that encrypt for you; keep the directory private.\n", filepath.Join(o.Dir, keys.FileHPKEPublic))
	return nil
}

func printKeys(w interface{ Write([]byte) (int, error) }, list []keys.Info) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPURPOSE\tTYPE\tSTATUS\tPRIMARY\tCREATED")
	for _, k := range list {
		p := ""
		if k.Primary {
			p = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Purpose, k.Type, k.Status, p, k.Created.Format(time.RFC3339))
	}
	tw.Flush()
}

type keysPublicOptions struct {
	*globals
	Dir, Out string
}

func (o *keysPublicOptions) Run(ctx context.Context) error {
	d, err := openKeys(ctx, o.Dir)
	if err != nil {
		return err
	}
	if o.Out == "" {
		b, err := os.ReadFile(filepath.Join(o.Dir, keys.FileHPKEPublic))
		if err != nil {
			return err
		}
		if _, err := keys.LoadRecipient(filepath.Join(o.Dir, keys.FileHPKEPublic)); err != nil {
			return err
		}
		_, err = o.Stdout.Write(b)
		return err
	}
	paths, err := d.WritePublic(o.Out)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"written": paths})
	}
	for _, p := range paths {
		fmt.Fprintln(o.Stdout, "wrote", p)
	}
	return nil
}

type keysListOptions struct {
	*globals
	Dir string
}

func (o *keysListOptions) Run(ctx context.Context) error {
	d, err := openKeys(ctx, o.Dir)
	if err != nil {
		return err
	}
	list, err := d.List()
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"dir": o.Dir, "keys": list})
	}
	printKeys(o.Stdout, list)
	return nil
}

type keysRotateOptions struct {
	*globals
	Dir string
}

func (o *keysRotateOptions) Run(ctx context.Context) error {
	d, err := openKeys(ctx, o.Dir)
	if err != nil {
		return err
	}
	id, err := d.Rotate()
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"dir": o.Dir, "new_primary_kek": id})
	}
	fmt.Fprintf(o.Stdout, "New primary KEK %d. Older KEKs still decrypt; rewrap objects, then disable them.\n", id)
	return nil
}

type keysDisableOptions struct {
	*globals
	Dir string
	ID  uint32
}

func (o *keysDisableOptions) Run(ctx context.Context) error {
	d, err := openKeys(ctx, o.Dir)
	if err != nil {
		return err
	}
	purpose, err := d.Disable(o.ID)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"dir": o.Dir, "disabled": o.ID, "purpose": purpose})
	}
	fmt.Fprintf(o.Stdout, "Disabled %s key %d.\n", purpose, o.ID)
	return nil
}
