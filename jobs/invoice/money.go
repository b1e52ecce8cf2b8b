package invoice

import (
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"golang.org/x/text/currency"
)

// Money is integer minor units from the database to the page: amounts are
// int64 (or big.Int while summing), quantities and rates exact rationals
// read from PostgreSQL's numeric text, and the one rounding step is done on
// integers. No float64 touches an amount.

// Exponent is the number of decimals of an ISO 4217 currency (JPY 0, EUR 2,
// KWD 3), its minor unit in ISO 4217's list one: the codes errand knows are
// golang.org/x/text/currency's (CLDR 32, 2017) with its standard digits,
// corrected by isoExponents where ISO's minor unit is not CLDR's, plus the
// current codes CLDR 32 predates. Lower case is read as upper case.
func Exponent(code string) (int, error) {
	if len(code) == 3 {
		if exp, ok := isoExponents[strings.ToUpper(code)]; ok {
			return exp, nil
		}
	}
	u, err := currency.ParseISO(code)
	if err != nil || u.String() == "XXX" {
		return 0, fmt.Errorf("currency %q is not an ISO 4217 code errand knows", code)
	}
	scale, _ := currency.Standard.Rounding(u)
	return scale, nil
}

// isoExponents are ISO 4217's minor units (list one, the current table
// published by SIX Group for the ISO 4217 maintenance agency) for every
// code on it whose minor unit CLDR 32 has otherwise, or which CLDR 32 does
// not know. CLDR's "digits" are how many decimals a locale usually shows,
// not the currency's minor unit: it says 0 where the smallest coin or note
// in use is a whole unit, while ISO 4217 keeps the subdivision, and so do
// the payment APIs an app takes its minor units from (Stripe's 100000 COP
// is 1,000.00 pesos). Each entry says what CLDR 32 (x/text) has; the test
// TestISOExponentsOverrideXText keeps every entry a real override.
//
// Not changed: codes withdrawn from list one, or never on it, keep CLDR's
// digits (MRO and STD 0, which ISO had as 2 until their 2018
// redenominations; CNH, historic European codes); the funds and metals
// whose ISO minor unit is "N.A." (XAU, XAG, XPD, XPT, XDR, XBA..XBD, XSU,
// XUA, XTS) keep CLDR's 2.
var isoExponents = map[string]int{
	"AFN": 2, // CLDR 0
	"ALL": 2, // CLDR 0
	"AMD": 2, // CLDR 0
	"COP": 2, // CLDR 0
	"GYD": 2, // CLDR 0
	"IDR": 2, // CLDR 0
	"IQD": 3, // CLDR 0
	"IRR": 2, // CLDR 0
	"KPW": 2, // CLDR 0
	"LAK": 2, // CLDR 0
	"LBP": 2, // CLDR 0
	"MGA": 2, // CLDR 0
	"MMK": 2, // CLDR 0
	"MNT": 2, // CLDR 0
	"MUR": 2, // CLDR 0
	"PKR": 2, // CLDR 0
	"RSD": 2, // CLDR 0
	"SLL": 2, // CLDR 0 (the old leone, being replaced by SLE)
	"SOS": 2, // CLDR 0
	"SYP": 2, // CLDR 0
	"TZS": 2, // CLDR 0
	"UZS": 2, // CLDR 0
	"YER": 2, // CLDR 0

	// Codes CLDR 32 does not know (x/text refuses them).
	"MRU": 2, // unknown to CLDR 32: Mauritanian ouguiya, replaced MRO in 2018
	"SLE": 2, // unknown to CLDR 32: Sierra Leonean leone, replaces SLL since 2022
	"UYW": 4, // unknown to CLDR 32: Uruguay's unidad previsional, 2018
	"VED": 2, // unknown to CLDR 32: Venezuela's bolívar digital, 2021
	"VES": 2, // unknown to CLDR 32: Venezuela's bolívar soberano, replaced VEF in 2018
	"XCG": 2, // unknown to CLDR 32: Caribbean guilder, replaces ANG since 2025
	"ZWG": 2, // unknown to CLDR 32: Zimbabwe gold, 2024
}

// FormatAmount writes minor units with the currency's decimals, a dot
// before them and commas between thousands: 123456 EUR is "1,234.56",
// 123456 JPY "123,456", -5 KWD "-0.005".
func FormatAmount(minor int64, exponent int) string {
	return formatBig(big.NewInt(minor), exponent)
}

func formatBig(minor *big.Int, exponent int) string {
	digits := new(big.Int).Abs(minor).String()
	if len(digits) <= exponent {
		digits = strings.Repeat("0", exponent-len(digits)+1) + digits
	}
	whole, frac := digits[:len(digits)-exponent], digits[len(digits)-exponent:]
	var b strings.Builder
	if minor.Sign() < 0 {
		b.WriteByte('-')
	}
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if exponent > 0 {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

// roundHalfAway rounds r to an integer, halves away from zero (2.5 is 3,
// -2.5 is -3): the rule of commercial rounding, and of most tax offices.
func roundHalfAway(r *big.Rat) *big.Int {
	num, den := new(big.Int).Abs(r.Num()), r.Denom()
	q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	if rem.Lsh(rem, 1).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if r.Sign() < 0 {
		q.Neg(q)
	}
	return q
}

// parseDecimal reads a PostgreSQL numeric's text ("2", "0.125", "19.60").
func parseDecimal(s string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok || strings.ContainsAny(s, "eE/") {
		return nil, fmt.Errorf("%q is not a decimal number", s)
	}
	return r, nil
}

// formatDecimal writes an exact decimal without trailing zeros: "2",
// "0.125", "19.6".
func formatDecimal(r *big.Rat) string {
	s := r.FloatString(12)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Line is one invoice line as stored.
type Line struct {
	Description string
	Quantity    string // numeric text
	UnitAmount  int64  // minor units
	TaxRate     string // numeric text, a percentage
}

// TaxLine is the tax of one rate: Base is the sum of the net amounts of
// the lines at that rate, Tax that times the rate, rounded once.
type TaxLine struct {
	Rate string // "20", "7.5"
	Base int64
	Tax  int64
}

// Totals are an invoice's computed amounts, in minor units.
type Totals struct {
	Lines    []int64 // each line's net amount: quantity × unit amount, rounded
	Subtotal int64
	Taxes    []TaxLine // by rate, lowest first; a rate of 0 has none
	Total    int64
}

// ErrOverflow is an invoice whose amounts do not fit 64-bit minor units.
var ErrOverflow = errors.New("amounts do not fit in 64-bit minor units")

// Compute works out an invoice's amounts. A line's net amount is quantity
// × unit amount rounded half away from zero to a minor unit (a quantity may
// have decimals: 1.5 hours). Tax is rounded once per rate for the whole
// invoice: for each rate, the sum of its lines' net amounts times the rate,
// rounded half away from zero. The total is the subtotal plus those taxes,
// so the printed figures always add up.
func Compute(lines []Line) (Totals, error) {
	var t Totals
	subtotal := new(big.Int)
	type group struct {
		rate *big.Rat
		base *big.Int
	}
	var groups []*group
	for i, l := range lines {
		q, err := parseDecimal(l.Quantity)
		if err != nil {
			return Totals{}, fmt.Errorf("line %d: quantity %w", i+1, err)
		}
		rate, err := parseDecimal(l.TaxRate)
		if err != nil {
			return Totals{}, fmt.Errorf("line %d: tax_rate %w", i+1, err)
		}
		net := roundHalfAway(new(big.Rat).Mul(q, new(big.Rat).SetInt64(l.UnitAmount)))
		if !net.IsInt64() {
			return Totals{}, fmt.Errorf("line %d: %s × %d: %w", i+1, l.Quantity, l.UnitAmount, ErrOverflow)
		}
		t.Lines = append(t.Lines, net.Int64())
		subtotal.Add(subtotal, net)
		if rate.Sign() == 0 {
			continue
		}
		k := slices.IndexFunc(groups, func(g *group) bool { return g.rate.Cmp(rate) == 0 })
		if k < 0 {
			groups = append(groups, &group{rate: rate, base: new(big.Int)})
			k = len(groups) - 1
		}
		groups[k].base.Add(groups[k].base, net)
	}
	slices.SortFunc(groups, func(a, b *group) int { return a.rate.Cmp(b.rate) })
	total := new(big.Int).Set(subtotal)
	for _, g := range groups {
		tax := roundHalfAway(new(big.Rat).Mul(new(big.Rat).SetInt(g.base), new(big.Rat).Quo(g.rate, big.NewRat(100, 1))))
		if !g.base.IsInt64() || !tax.IsInt64() {
			return Totals{}, fmt.Errorf("tax at %s %%: %w", formatDecimal(g.rate), ErrOverflow)
		}
		t.Taxes = append(t.Taxes, TaxLine{Rate: formatDecimal(g.rate), Base: g.base.Int64(), Tax: tax.Int64()})
		total.Add(total, tax)
	}
	if !subtotal.IsInt64() || !total.IsInt64() {
		return Totals{}, fmt.Errorf("total: %w", ErrOverflow)
	}
	t.Subtotal, t.Total = subtotal.Int64(), total.Int64()
	return t, nil
}
