package cli

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func rewrapCommand() *cli.Command {
	return &cli.Command{
		Name:  "rewrap",
		Usage: "replace an encrypted file's recipients without touching its payload",
		UsageText: `ehrport rewrap --keys OLD (--to-keys NEW | --add-recipient PUB.json|KMS-URI ... | --remove-recipient KEYID|KMS-URI ...) IN OUT

Examples:
   ehrport rewrap --keys ./old-keys --to-keys ./new-keys Patient.000.ndjson.ehr Patient.000.ndjson.ehr
   ehrport rewrap --keys ./hospital-keys --add-recipient auditor.pub.json in.ehr out.ehr
   ehrport rewrap --keys ./hospital-keys --remove-recipient 1234567890 in.ehr out.ehr`,
		Description: `Unwraps the file's key (DEK) with OLD and writes a new header: only the
header changes, the payload bytes are copied unchanged and the key
commitment still binds them. --to-keys replaces every recipient stanza (not
escrow stanzas) with NEW's primary KEK. Rewrap does not revoke: whoever saw
the DEK can still read the payload; use 'ehrport rekey' for that.
The passphrase for NEW comes from EHRPORT_TO_PASSPHRASE, else
EHRPORT_PASSPHRASE, else the terminal.`,
		Flags: []cli.Flag{
			keysDirFlag("unwrap with the keys of `OLD`"),
			&cli.StringFlag{Name: "to-keys", Usage: "replace the recipients with the primary KEK of `NEW`", TakesFile: true},
			&cli.StringSliceFlag{Name: "add-recipient", Usage: "add the public keyset `PUB.json` or a KMS key URI (repeatable)"},
			&cli.StringSliceFlag{Name: "remove-recipient", Usage: "remove the stanza of key `KEYID` or KMS URI (repeatable)"},
			&cli.StringSliceFlag{Name: "kms", Usage: "also unwrap with the KMS key `URI`"},
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("rewrap needs IN and OUT")
			}
			return (&rewrapOptions{globals: g, Keys: c.String("keys"), KMS: c.StringSlice("kms"), ToKeys: c.String("to-keys"),
				Add: c.StringSlice("add-recipient"), Remove: c.StringSlice("remove-recipient"),
				In: c.Args().Get(0), Out: c.Args().Get(1)}).Run(c.Context)
		},
	}
}

type rewrapOptions struct {
	*globals
	Keys, ToKeys string
	KMS          []string
	Add, Remove  []string
	In, Out      string
}

func (o *rewrapOptions) Run(ctx context.Context) error {
	if o.ToKeys == "" && len(o.Add) == 0 && len(o.Remove) == 0 {
		return usagef("say what to change: --to-keys NEW, --add-recipient or --remove-recipient")
	}
	ids, err := identitiesFrom(ctx, o.Keys, o.KMS)
	if err != nil {
		return err
	}
	add, err := recipientsFrom(ctx, o.ToKeys, o.Add, nil, "EHRPORT_TO_PASSPHRASE", "EHRPORT_PASSPHRASE")
	if err != nil {
		return err
	}
	removeIDs := map[uint32]bool{}
	removeURIs := map[string]bool{}
	for _, r := range o.Remove {
		if strings.Contains(r, "://") {
			removeURIs[r] = true
			continue
		}
		id, err := strconv.ParseUint(r, 10, 32)
		if err != nil {
			return usagef("--remove-recipient %q: want a key id (see ehrport inspect) or a KMS URI", r)
		}
		removeIDs[uint32(id)] = true
	}
	removed := 0
	change := ehrcrypto.RewrapChange{
		Add: add,
		Keep: func(s *ehrcrypto.Stanza) bool {
			drop := (o.ToKeys != "" && s.Role == ehrcrypto.RoleRecipient) ||
				(s.Type != ehrcrypto.StanzaKMS && removeIDs[s.KeyID]) ||
				(s.Type == ehrcrypto.StanzaKMS && removeURIs[s.Locator])
			if drop {
				removed++
			}
			return !drop
		},
	}
	if err := ehrcrypto.RewrapFile(o.Out, o.In, ids, change); err != nil {
		return err
	}
	if len(o.Remove) > 0 && removed == 0 {
		fmt.Fprintln(o.Stderr, "ehrport: warning: no stanza matched --remove-recipient")
	}
	f, err := os.Open(o.Out)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := ehrcrypto.ParseHeader(f)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"operation": "rewrap", "out": o.Out, "payload_changed": false, "dek_changed": false,
			"stanzas_removed": removed, "stanzas_added": len(add), "stanzas": stanzaJSON(h.Stanzas)})
	}
	fmt.Fprintf(o.Stdout, "rewrapped %s -> %s: header replaced (%d stanza(s) removed, %d added, %d now); payload bytes unchanged, same DEK.\n",
		o.In, o.Out, removed, len(add), len(h.Stanzas))
	fmt.Fprintln(o.Stdout, "note: rewrap does not revoke; anyone who saw the old DEK can still read it. Use 'ehrport rekey' to revoke.")
	return nil
}

func rekeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "rekey",
		Usage: "re-encrypt a file under a new DEK (revokes the old DEK)",
		UsageText: `ehrport rekey --keys OLD [--to-keys NEW] [--recipient PUB.json|KMS-URI ...] [--escrow PUB.json ...] --binding PATH [--export-id ID] IN OUT

Example:
   ehrport rekey --keys ./hospital-keys --binding exports/x/Patient.000.ndjson in.ehr out.ehr`,
		Description: `Decrypts with OLD and encrypts again under a fresh DEK, with the same binding.
Recipients: --to-keys NEW's KEK and any --recipient; if neither is given,
OLD's primary KEK. Escrow stanzas are not carried over: pass --escrow again.
OUT appears only after the whole input authenticated.`,
		Flags: append([]cli.Flag{
			keysDirFlag("decrypt with the keys of `OLD`"),
			&cli.StringFlag{Name: "to-keys", Usage: "encrypt for the primary KEK of `NEW`", TakesFile: true},
			&cli.StringSliceFlag{Name: "recipient", Usage: "encrypt for the public keyset `PUB.json` or a KMS key URI"},
			&cli.StringSliceFlag{Name: "escrow", Usage: "also wrap for the escrow public keyset `PUB.json`"},
			&cli.StringSliceFlag{Name: "kms", Usage: "also decrypt with the KMS key `URI`"},
		}, bindingFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("rekey needs IN and OUT")
			}
			b, err := bindingFrom(c)
			if err != nil {
				return err
			}
			return (&rekeyOptions{globals: g, Keys: c.String("keys"), KMS: c.StringSlice("kms"), ToKeys: c.String("to-keys"),
				Recipients: c.StringSlice("recipient"), Escrow: c.StringSlice("escrow"), Binding: b,
				In: c.Args().Get(0), Out: c.Args().Get(1)}).Run(c.Context)
		},
	}
}

type rekeyOptions struct {
	*globals
	Keys, ToKeys       string
	KMS                []string
	Recipients, Escrow []string
	Binding            ehrcrypto.Binding
	In, Out            string
}

func (o *rekeyOptions) Run(ctx context.Context) error {
	ids, err := identitiesFrom(ctx, o.Keys, o.KMS)
	if err != nil {
		return err
	}
	to := o.ToKeys
	if to == "" && len(o.Recipients) == 0 {
		to = o.Keys
	}
	rs, err := recipientsFrom(ctx, to, o.Recipients, o.Escrow, "EHRPORT_TO_PASSPHRASE", "EHRPORT_PASSPHRASE")
	if err != nil {
		return err
	}
	in, err := os.Open(o.In)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := ehrcrypto.RekeyFile(o.Out, in, ids, o.Binding, rs); err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"operation": "rekey", "out": o.Out, "payload_changed": true, "dek_changed": true, "recipients": len(rs)})
	}
	fmt.Fprintf(o.Stdout, "rekeyed %s -> %s: new DEK, payload re-encrypted for %d recipient(s); the old DEK no longer opens it.\n", o.In, o.Out, len(rs))
	return nil
}
