package testdb

// The harness's own statements, in one place: the roles and databases a
// test asks for, run as the server's superuser, and auto_explain's
// settings. Creating, dropping and listing the test databases are
// store's (store.CreateDatabase, store.DropDatabase, store.DatabasesLike).

import "github.com/jackc/pgx/v5"

// createLoginRole creates role as the plain owner managed PostgreSQL gives
// errand: it may log in, and nothing more.
func createLoginRole(role string) string {
	return "CREATE ROLE " + pgx.Identifier{role}.Sanitize() + " LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS"
}

// createDatabaseOwnedBy creates the database name, owned by role.
func createDatabaseOwnedBy(name, role string) string {
	return "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " OWNER " + pgx.Identifier{role}.Sanitize()
}

// dropRoleIfExists drops role unless it is gone already.
func dropRoleIfExists(role string) string {
	return "DROP ROLE IF EXISTS " + pgx.Identifier{role}.Sanitize()
}

// tenantRoleAndUser reads a migrated database's tenant role
// (errand.tenant_role: migrations/005_tenant_isolation.sql) and the role
// errand connects as.
const tenantRoleAndUser = `SELECT errand.tenant_role(), current_user`

// createNologinRole creates role as the README asks an administrator to
// create the tenant role: no login, no inherited privileges.
func createNologinRole(role string) string {
	return "CREATE ROLE " + pgx.Identifier{role}.Sanitize() + " NOLOGIN NOINHERIT"
}

// grantRole makes member a member of role.
func grantRole(role, member string) string {
	return "GRANT " + pgx.Identifier{role}.Sanitize() + " TO " + pgx.Identifier{member}.Sanitize()
}

// dropOwnedBy drops role's objects and privileges in the database the
// connection is on.
func dropOwnedBy(role string) string {
	return "DROP OWNED BY " + pgx.Identifier{role}.Sanitize()
}

// loadAutoExplain loads auto_explain into the session (only a superuser
// may).
const loadAutoExplain = `LOAD 'auto_explain'`

// autoExplainSettings make every statement's plan, nested statements'
// included, with actual row counts, a notice to the client.
func autoExplainSettings() []string {
	return []string{
		`SET auto_explain.log_min_duration = 0`, `SET auto_explain.log_analyze = on`,
		`SET auto_explain.log_nested_statements = on`, `SET auto_explain.log_level = notice`,
	}
}
