/* config: loader diagnostics (file:line) and route choice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/translate.h"
#include "tap.h"

static char dir[] = "/tmp/bridge-test-config-XXXXXX";
static char mapping_abs[4096];

static const char *write_file(const char *name, const char *text)
{
	static char path[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

/* Load text as a config; return the diag text (static) or "" on success. */
static const char *load(const char *text, struct bridge_config **ret)
{
	static char out[8192];
	struct diag d = { 0 };
	struct bridge_config *c = NULL;
	const char *path = write_file("bridge.conf", text);
	int rc = bridge_config_load(path, &c, &d);

	snprintf(out, sizeof(out), "%s", rc == 0 ? "" : (d.text ? d.text : "(error without text)"));
	diag_reset(&d);
	if (ret)
		*ret = c;
	else
		bridge_config_free(c);
	return out;
}

static int has(const char *hay, const char *needle)
{
	int found = strstr(hay, needle) != NULL;

	if (!found)
		printf("#   wanted \"%s\" in:\n#   %s\n", needle, hay);
	return found;
}

int main(void)
{
	struct bridge_config *c = NULL;
	const struct bridge_route *r;
	char text[32768];
	const char *out;

	if (!mkdtemp(dir))
		return 1;
	if (!realpath("mappings/qualifio-v1-to-v2.conf", mapping_abs)) {
		printf("not ok 1 - shipped mapping found (run from the source root)\n1..1\n");
		return 1;
	}

	/* the shipped default config loads */
	{
		struct diag d = { 0 };

		ok(bridge_config_load("mappings/bridge.conf", &c, &d) == 0,
		   "shipped bridge.conf loads");
		if (d.text)
			printf("# %s", d.text);
		diag_reset(&d);
		ok(c && c->n_routes == 1 && c->routes[0].mode == ROUTE_DRY_RUN,
		   "shipped config has one dry-run route");
		ok(c && c->listen_port == 8080 && strcmp(c->listen_address, "127.0.0.1") == 0,
		   "shipped config listens on 127.0.0.1:8080");
		bridge_config_free(c);
		c = NULL;
	}

	/* errors carry file:line, all of them in one run */
	snprintf(text, sizeof(text),
		 "listen = { port = 8080; };\n"   /* 1 */
		 "bogus = 1;\n"                   /* 2 */
		 "routes = (\n"                   /* 3 */
		 "  { name = \"a\";\n"            /* 4 */
		 "    mapping = \"%s\";\n"        /* 5 */
		 "    mode = \"sideways\";\n"     /* 6 */
		 "  },\n"                         /* 7 */
		 "  { name = \"b\";\n"            /* 8 */
		 "    mapping = \"%s\";\n"        /* 9 */
		 "    endpoint = \"ftp://x/\";\n" /* 10 */
		 "    timeout_ms = 0;\n"          /* 11 */
		 "    secret = \"k\";\n"          /* 12 */
		 "  }\n"                          /* 13 */
		 ");\n",
		 mapping_abs, mapping_abs);
	out = load(text, NULL);
	ok(has(out, "bridge.conf:2: unknown setting 'bogus'"),
	   "unknown top-level setting at its line");
	ok(has(out, "bridge.conf:6: 'mode' = \"sideways\" is not one of: forward | dry-run"),
	   "bad mode at its line");
	ok(has(out, "bridge.conf:10: endpoint 'ftp://x/'"), "bad endpoint scheme at its line");
	ok(has(out, "bridge.conf:11: 'timeout_ms' = 0 is out of range"),
	   "timeout range at its line");

	snprintf(text, sizeof(text),
		 "routes = (\n"
		 "  { name = \"a\"; mapping = \"%s\"; mode = \"forward\"; }\n"
		 ");\n",
		 mapping_abs);
	out = load(text, NULL);
	ok(has(out, "bridge.conf:2: route 'a' is in forward mode but has no 'endpoint'"),
	   "forward without endpoint");
	ok(has(out, "no 'secret' to sign with"), "forward without secret");

	out = load(
		"routes = ( { name = \"a\"; mapping = \"missing.conf\"; mode = \"dry-run\"; } );\n",
		NULL);
	ok(has(out, "missing.conf"), "missing mapping file named");
	ok(has(out, "bridge.conf:1: route 'a': mapping"),
	   "missing mapping blamed on the route's line");

	write_file("loop-b.conf", "@include \"loop-a.conf\"\n");
	write_file("loop-a.conf", "@include \"loop-b.conf\"\n");
	out = load("@include \"loop-a.conf\"\nroutes = ();\n", NULL);
	ok(has(out, "includes itself"), "an include cycle is an error, not a hang");
	out = load("@include \"bridge.conf\"\n@include \"bridge.conf\"\nroutes = ();\n", NULL);
	ok(has(out, "bridge.conf:1: @include \"bridge.conf\" includes itself"),
	   "a file including itself is named with its line");

	out = load("# a comment\nlisten = { port = = 8080; };\nroutes = ();\n", NULL);
	ok(has(out, "bridge.conf:2:"), "syntax error reported with file:line");

	out = load("listen = { port = 99999999999; };\nroutes = ();\n", NULL);
	ok(has(out, "bridge.conf:1: integer 99999999999 does not fit in 32 bits"),
	   "integer literal libconfig would wrap is an error, not a wrong value");
	out = load("listen = { port = 99999999999L; };\nroutes = ();\n", NULL);
	ok(has(out, "'port' = 99999999999 is out of range"),
	   "64-bit value range-checked, not truncated");
	out = load("# 99999999999 in a comment\nlisten = { address = \"99999999999\"; };\nroutes = "
		   "();\n",
		   NULL);
	ok(!strstr(out, "does not fit"), "digits in comments and strings are not literals");

	snprintf(text, sizeof(text),
		 "routes = (\n"
		 "  { name = \"a\"; mapping = \"%s\"; mode = \"dry-run\"; },\n"
		 "  { name = \"a\"; mapping = \"%s\"; mode = \"dry-run\"; }\n"
		 ");\n",
		 mapping_abs, mapping_abs);
	out = load(text, NULL);
	ok(has(out, "bridge.conf:3: route name 'a' is already used at line 2"),
	   "duplicate route name");

	/* route choice: campaign beats website beats catch-all, then file order */
	snprintf(text, sizeof(text),
		 "routes = (\n"
		 "  { name = \"all\"; mapping = \"%s\"; mode = \"dry-run\"; },\n"
		 "  { name = \"site\"; mapping = \"%s\"; mode = \"dry-run\"; match = { website_id "
		 "= [ 1234, 99 ]; }; },\n"
		 "  { name = \"camp\"; mapping = \"%s\"; mode = \"dry-run\"; match = { campaign_id "
		 "= [ \"5678\" ]; }; },\n"
		 "  { name = \"big\"; mapping = \"%s\"; mode = \"dry-run\"; match = { campaign_id "
		 "= [ \"18446744073709551615\" ]; }; },\n"
		 "  { name = \"all2\"; mapping = \"%s\"; mode = \"dry-run\"; }\n"
		 ");\n",
		 mapping_abs, mapping_abs, mapping_abs, mapping_abs, mapping_abs);
	out = load(text, &c);
	is_str(out, "", "route config loads");
	if (c) {
		r = translate_route_for(c, "1234", "5678");
		is_str(r ? r->name : NULL, "camp", "campaign match wins over website match");
		r = translate_route_for(c, "1234", "1");
		is_str(r ? r->name : NULL, "site", "website match wins over catch-all");
		r = translate_route_for(c, "7", "1");
		is_str(r ? r->name : NULL, "all", "catch-all: first in file order");
		r = translate_route_for(c, NULL, NULL);
		is_str(r ? r->name : NULL, "all", "absent ids reach the catch-all");
		r = translate_route_for(c, "1", "18446744073709551615");
		is_str(r ? r->name : NULL, "big",
		       "64-bit campaign id given as a string matches exactly");
		r = translate_route_for(c, "1", "5678");
		is_str(r ? r->name : NULL, "camp", "campaign route ignores the website");
		bridge_config_free(c);
	}
	snprintf(text, sizeof(text),
		 "routes = ( { name = \"site\"; mapping = \"%s\"; mode = \"dry-run\"; match = { "
		 "website_id = [ 1 ]; campaign_id = [ 2 ]; }; } );\n",
		 mapping_abs);
	out = load(text, &c);
	if (c) {
		ok(translate_route_for(c, "1", "2") != NULL, "route with both lists: both match");
		ok(translate_route_for(c, "1", "3") == NULL,
		   "route with both lists: campaign must match too");
		ok(translate_route_for(c, NULL, "2") == NULL,
		   "route with both lists: website must match too");
		bridge_config_free(c);
	} else {
		ok(0, "config with both lists loads");
	}
	return tap_done();
}
