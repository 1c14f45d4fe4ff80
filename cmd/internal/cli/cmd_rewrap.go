package cli

import (
	"context"
	"errors"
	"fmt"
	"github.com/ehrport/ehrport/storage"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/ehrport/ehrport/cmd/internal/export"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
)

func rewrapCommand() *cli.Command {
	return &cli.Command{
		Name:  "rewrap",
		Usage: "replace an encrypted file's recipients without touching its payload",
		UsageText: `ehrport rewrap --keys OLD (--to-keys NEW | --add-recipient PUB.json|KMS-URI ... | --remove-recipient KEYID|KMS-URI ...) IN OUT
ehrport rewrap --at REF --keys OLD (--to-keys NEW | --add-recipient ... | --remove-recipient ...)

Examples:
   ehrport rewrap --at cloudb:exit-2026/run1 --keys ./old-keys --to-keys ./new-keys
   ehrport rewrap --keys ./old-keys --to-keys ./new-keys Patient.000.ndjson.ehr Patient.000.ndjson.ehr
   ehrport rewrap --keys ./hospital-keys --add-recipient auditor.pub.json in.ehr out.ehr
   ehrport rewrap --keys ./hospital-keys --remove-recipient 1234567890 in.ehr out.ehr`,
		Description: `Unwraps the file's key (DEK) with OLD and writes a new header: only the
header changes, the payload bytes are copied unchanged and the key
commitment still binds them. --to-keys replaces every recipient stanza (not
escrow stanzas) with NEW's primary KEK. Rewrap does not revoke: whoever saw
the DEK can still read the payload; use 'ehrport rekey' for that.
The passphrase for NEW comes from EHRPORT_TO_PASSPHRASE, else
EHRPORT_PASSPHRASE, else the terminal.

With --at REF it rotates a whole export at rest: the manifest's signature is
checked with OLD, every object gets a new header (objects over 10 MiB by a
server-side copy of the untouched payload where the store supports it, so
only the header and 5 MiB cross the network), each result is proven, and
the manifest is rewritten with the new sizes and hashes and signed with
NEW's signing key (OLD's when only recipients are added or removed). A rerun
after an interruption recognises objects already rewrapped and finishes.`,
		Flags: []cli.Flag{
			keysDirFlag("unwrap with the keys of `OLD`"),
			&cli.StringFlag{Name: "to-keys", Usage: "replace the recipients with the primary KEK of `NEW`", TakesFile: true},
			&cli.StringSliceFlag{Name: "add-recipient", Usage: "add the public keyset `PUB.json` or a KMS key URI (repeatable)"},
			&cli.StringSliceFlag{Name: "remove-recipient", Usage: "remove the stanza of key `KEYID` or KMS URI (repeatable)"},
			&cli.StringSliceFlag{Name: "kms", Usage: "also unwrap with the KMS key `URI`"},
			&cli.StringFlag{Name: "at", Usage: "rewrap every object of the export at `REF`, and re-sign its manifest"},
			&cli.BoolFlag{Name: "allow-unsigned", Usage: "with --at: accept an unsigned manifest (not recommended)"},
		},
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if at := c.String("at"); at != "" {
				if c.NArg() != 0 {
					return usagef("rewrap --at takes no IN and OUT")
				}
				return (&rewrapAtOptions{rewrapOptions: rewrapOptions{globals: g, Keys: c.String("keys"), KMS: c.StringSlice("kms"), ToKeys: c.String("to-keys"),
					Add: c.StringSlice("add-recipient"), Remove: c.StringSlice("remove-recipient")}, At: at, AllowUnsigned: c.Bool("allow-unsigned")}).Run(c.Context)
			}
			if c.NArg() != 2 {
				return usagef("rewrap needs IN and OUT (or --at REF for a whole export)")
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

// change builds the stanza edit the flags ask for. removed counts the
// stanzas it drops, as the rewrap runs.
func (o *rewrapOptions) change(ctx context.Context) (change ehrcrypto.RewrapChange, add []ehrcrypto.Recipient, removed *int, err error) {
	if o.ToKeys == "" && len(o.Add) == 0 && len(o.Remove) == 0 {
		return change, nil, nil, usagef("say what to change: --to-keys NEW, --add-recipient or --remove-recipient")
	}
	add, err = recipientsFrom(ctx, o.ToKeys, o.Add, nil, "EHRPORT_TO_PASSPHRASE", "EHRPORT_PASSPHRASE")
	if err != nil {
		return change, nil, nil, err
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
			return change, nil, nil, usagef("--remove-recipient %q: want a key id (see ehrport inspect) or a KMS URI", r)
		}
		removeIDs[uint32(id)] = true
	}
	var mu sync.Mutex
	removed = new(int)
	change = ehrcrypto.RewrapChange{
		Add: add,
		Keep: func(s *ehrcrypto.Stanza) bool {
			drop := (o.ToKeys != "" && s.Role == ehrcrypto.RoleRecipient) ||
				(s.Type != ehrcrypto.StanzaKMS && removeIDs[s.KeyID]) ||
				(s.Type == ehrcrypto.StanzaKMS && removeURIs[s.Locator])
			if drop {
				mu.Lock()
				*removed++
				mu.Unlock()
			}
			return !drop
		},
	}
	return change, add, removed, nil
}

func (o *rewrapOptions) Run(ctx context.Context) error {
	change, add, removedp, err := o.change(ctx)
	if err != nil {
		return err
	}
	ids, err := identitiesFrom(ctx, o.Keys, o.KMS)
	if err != nil {
		return err
	}
	if err := ehrcrypto.RewrapFile(o.Out, o.In, ids, change); err != nil {
		return err
	}
	if len(o.Remove) > 0 && *removedp == 0 {
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
			"stanzas_removed": *removedp, "stanzas_added": len(add), "stanzas": stanzaJSON(h.Stanzas)})
	}
	fmt.Fprintf(o.Stdout, "rewrapped %s -> %s: header replaced (%d stanza(s) removed, %d added, %d now); payload bytes unchanged, same DEK.\n",
		o.In, o.Out, *removedp, len(add), len(h.Stanzas))
	fmt.Fprintln(o.Stdout, "note: rewrap does not revoke; anyone who saw the old DEK can still read it. Use 'ehrport rekey' to revoke.")
	return nil
}

func rekeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "rekey",
		Usage: "re-encrypt a file under a new DEK (revokes the old DEK)",
		UsageText: `ehrport rekey --keys OLD [--to-keys NEW] [--recipient PUB.json|KMS-URI ...] [--escrow PUB.json ... | --drop-escrow] --binding PATH [--export-id ID] IN OUT

Example:
   ehrport rekey --keys ./hospital-keys --escrow auditor.pub.json --binding exports/x/Patient.000.ndjson in.ehr out.ehr`,
		Description: `Decrypts with OLD and encrypts again under a fresh DEK, with the same binding.
Recipients: --to-keys NEW's KEK and any --recipient; if neither is given,
OLD's primary KEK. Escrow recipients of IN are kept: the new DEK is wrapped
for each again, with its public key from --escrow PUB.json or, when it is
the HPKE key of OLD or NEW, from that directory's hpke.pub.json. When the
public key of one is not at hand (ehrport inspect IN lists them), rekey
refuses (exit 3), unless --drop-escrow says to drop it; a warning then names
the dropped escrow recipients.
OUT appears only after the whole input authenticated.`,
		Flags: append([]cli.Flag{
			keysDirFlag("decrypt with the keys of `OLD`"),
			&cli.StringFlag{Name: "to-keys", Usage: "encrypt for the primary KEK of `NEW`", TakesFile: true},
			&cli.StringSliceFlag{Name: "recipient", Usage: "encrypt for the public keyset `PUB.json` or a KMS key URI"},
			&cli.StringSliceFlag{Name: "escrow", Usage: "also wrap for the escrow public keyset `PUB.json` (needed for each escrow of IN not of OLD or NEW)"},
			&cli.BoolFlag{Name: "drop-escrow", Usage: "rekey even when escrow recipients of IN are not given again with --escrow (they lose access)"},
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
				Recipients: c.StringSlice("recipient"), Escrow: c.StringSlice("escrow"), DropEscrow: c.Bool("drop-escrow"), Binding: b,
				In: c.Args().Get(0), Out: c.Args().Get(1)}).Run(c.Context)
		},
	}
}

type rekeyOptions struct {
	*globals
	Keys, ToKeys       string
	KMS                []string
	Recipients, Escrow []string
	DropEscrow         bool
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
	old, err := ehrcrypto.ParseHeader(in)
	if err != nil {
		return fmt.Errorf("%s: %w", o.In, err)
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	carried, err := carryEscrow(old, o.Escrow, o.Keys, o.ToKeys)
	if err != nil {
		return err
	}
	for _, r := range carried {
		rs = append(rs, ehrcrypto.Escrow(r))
	}
	var opts []ehrcrypto.Option
	if o.DropEscrow {
		opts = append(opts, ehrcrypto.AllowEscrowDrop())
	}
	if err := ehrcrypto.RekeyFile(o.Out, in, ids, o.Binding, rs, opts...); err != nil {
		var ed *ehrcrypto.EscrowDroppedError
		if errors.As(err, &ed) {
			return fmt.Errorf("%s: %w (pass each with --escrow PUB.json, or --drop-escrow to drop them knowingly)", o.In, err)
		}
		return err
	}
	dropped, err := droppedEscrow(old, o.Out)
	if err != nil {
		return err
	}
	names := make([]string, len(dropped))
	for i := range dropped {
		names[i] = ehrcrypto.StanzaName(&dropped[i])
	}
	if len(names) > 0 {
		fmt.Fprintf(o.Stderr, "ehrport: warning: escrow recipient(s) dropped by --drop-escrow: %s; they cannot open %s\n", strings.Join(names, ", "), o.Out)
	}
	kept := make([]string, len(carried))
	for i, r := range carried {
		kept[i] = fmt.Sprintf("%s key %d", ehrcrypto.StanzaTypeName(ehrcrypto.StanzaHPKE), r.KeyID())
	}
	if o.JSON {
		return o.printJSON(map[string]any{"operation": "rekey", "out": o.Out, "payload_changed": true, "dek_changed": true, "recipients": len(rs),
			"escrow_carried": kept, "escrow_dropped": names})
	}
	fmt.Fprintf(o.Stdout, "rekeyed %s -> %s: new DEK, payload re-encrypted for %d recipient(s); the old DEK no longer opens it.\n", o.In, o.Out, len(rs))
	if len(kept) > 0 {
		fmt.Fprintf(o.Stdout, "escrow kept with the public key of the key directory: %s\n", strings.Join(kept, ", "))
	}
	return nil
}

// carryEscrow returns the HPKE public keys, from the key directories dirs,
// of the escrow stanzas of old that the --escrow files given do not cover.
func carryEscrow(old *ehrcrypto.Header, given []string, dirs ...string) ([]*ehrcrypto.HPKERecipient, error) {
	have := map[uint32]bool{}
	for _, p := range given {
		r, err := keys.LoadRecipient(p)
		if err != nil {
			return nil, err
		}
		have[r.KeyID()] = true
	}
	var out []*ehrcrypto.HPKERecipient
	for _, d := range dirs {
		if d == "" {
			continue
		}
		r, err := keys.LoadRecipient(filepath.Join(d, keys.FileHPKEPublic))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, s := range old.Stanzas {
			if s.Role == ehrcrypto.RoleEscrow && s.Type == ehrcrypto.StanzaHPKE && s.KeyID == r.KeyID() && !have[s.KeyID] {
				have[s.KeyID] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// droppedEscrow compares the escrow stanzas of the old header with those
// of the file written at path.
func droppedEscrow(old *ehrcrypto.Header, path string) ([]ehrcrypto.Stanza, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := ehrcrypto.ParseHeader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ehrcrypto.DroppedEscrow(old, h), nil
}

type rewrapAtOptions struct {
	rewrapOptions
	At            string
	AllowUnsigned bool
}

func (o *rewrapAtOptions) Run(ctx context.Context) error {
	change, _, removedp, err := o.change(ctx)
	if err != nil {
		return err
	}
	if o.Keys == "" {
		return usagef("rewrap --at needs --keys OLD")
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	st, err := openExisting(cfg, o.At, "--at")
	if err != nil {
		return err
	}
	old, err := openKeys(ctx, o.Keys)
	if err != nil {
		return err
	}
	ids := old.Identities()
	verifier, err := keys.LoadVerifier(filepath.Join(o.Keys, keys.FileVerify))
	if err != nil {
		return err
	}
	// The new keys sign the rotated export; when only recipients change,
	// the old signing key stays.
	signDir := old
	var newIDs []ehrcrypto.Identity
	if o.ToKeys != "" {
		nd, err := openKeys(ctx, o.ToKeys, "EHRPORT_TO_PASSPHRASE", "EHRPORT_PASSPHRASE")
		if err != nil {
			return err
		}
		signDir, newIDs = nd, nd.Identities()
	}
	signer, err := signDir.Signer()
	if err != nil {
		return err
	}
	ro := &export.RewrapOptions{Store: st, Identities: ids, Verifier: verifier, AllowUnsigned: o.AllowUnsigned,
		Change: change, NewIdentities: newIDs, Signer: signer, Log: o.Log}
	sum, err := ro.Run(ctx)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"operation": "rewrap", "payload_changed": false, "dek_changed": false, "summary": sum, "stanzas_removed": *removedp})
	}
	fmt.Fprintf(o.Stdout, "rewrapped export %s at %s: %d objects, headers replaced (%d by server-side copy of the payload, %d rewritten, %d already done by an earlier run); payload bytes unchanged, same data keys.\n",
		sum.ExportID, sum.Location, sum.Objects, sum.ServerSide, sum.Rewritten, sum.Resumed)
	fmt.Fprintf(o.Stdout, "uploaded %s, copied by the server %s; every object proven; manifest rewritten and signed with key %d (%d recipient stanza(s) per object).\n",
		storage.FormatSize(sum.BytesUploaded), storage.FormatSize(sum.BytesCopied), signer.KeyID(), sum.Recipients)
	return nil
}
