# The shipped mapping (mappings/qualifio-v1-to-v2.conf) written by hand in jq,
# as the baseline bench/run.sh times `webhook-bridge map` against:
#
#   jq -c -f bench/v1-to-v2.jq payloads.ndjson
#
# Same v2 fields from the same v1 keys, in the same order, for the
# representative v1 shape: upper/lower-casing, the status table, integers,
# the form / opt-in / question variables of the rule file, unnamed keys as
# generic form entries, and local Europe/Brussels times converted to UTC.
# jq has no time-zone database, so the Brussels offset comes from the EU rule
# (summer time, UTC+2, from the last Sunday of March to the last Sunday of
# October, both at 01:00 UTC; UTC+1 otherwise): right for every date since
# 1996, wrong before. Like the rule file, an ambiguous autumn time takes the
# earlier (summer) reading and a spring-gap time is an error. Integers are
# jq numbers (doubles): exact only up to 2^53, unlike the bridge.

def text: if type == "string" then . else tojson end;

# Epoch of the last Sunday of March or October of year $y, 01:00 UTC.
def eu_change($y; $month):
	("\($y)-\($month)-31T01:00:00Z" | fromdateiso8601) as $t
	| $t - (($t | gmtime | .[6]) * 86400);

def brussels_utc:
	. as $in
	| (strptime("%Y-%m-%d %H:%M:%S") | mktime) as $wall
	| ($wall | gmtime | .[0]) as $y
	| eu_change($y; "03") as $on
	| eu_change($y; "10") as $off
	| ($wall - 7200) as $summer
	| ($wall - 3600) as $winter
	| if $summer >= $on and $summer < $off then $summer
	  elif ($winter >= $on and $winter < $off) | not then $winter
	  else error("\($in): this local time does not exist in Europe/Brussels")
	  end
	| strftime("%Y-%m-%dT%H:%M:%S.000Z");

def integer:
	if type == "number" then .
	elif type == "string" and test("^-?[0-9]+$") then tonumber
	else error("\(tojson): not an integer") end;

def truth:
	if type == "boolean" then .
	elif . == 1 or . == "1" or . == "true" then true
	elif . == 0 or . == "0" or . == "false" then false
	else error("\(tojson): not a boolean") end;

# Keep only the members whose value is not null; null when none is left.
def compact: del(.[] | nulls) | if . == {} then null else . end;

def mime_types: {
	bmp: "image/bmp", csv: "text/csv", doc: "application/msword",
	docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	gif: "image/gif", heic: "image/heic", jpeg: "image/jpeg", jpg: "image/jpeg", m4a: "audio/mp4",
	mov: "video/quicktime", mp3: "audio/mpeg", mp4: "video/mp4",
	odt: "application/vnd.oasis.opendocument.text", pdf: "application/pdf", png: "image/png",
	ppt: "application/vnd.ms-powerpoint",
	pptx: "application/vnd.openxmlformats-officedocument.presentationml.presentation",
	svg: "image/svg+xml", tif: "image/tiff", tiff: "image/tiff", txt: "text/plain", wav: "audio/wav",
	webm: "video/webm", webp: "image/webp", xls: "application/vnd.ms-excel",
	xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", zip: "application/zip"
};

# file{path, name, type}: name is the last segment of the URL's path (query
# and fragment removed), type guessed from its extension.
def file_response:
	(split("?")[0] | split("#")[0]) as $p
	| ($p | index("://")) as $scheme
	| (if $scheme != null and ($p[:$scheme] | index("/")) == null
	   then $p[$scheme + 3:] | split("/") | .[1:] else $p | split("/") end
	   | last // "") as $name
	| ($name | split(".") | if length > 1 then last | ascii_downcase else "" end) as $ext
	| {file: ({path: .} + (if $name == "" then {} else {name: $name} end)
	          + {type: (mime_types[$ext] // "application/octet-stream")})};

def form_vars: [
	{variable: "lastname", id: 1001, label: "Last name", type: "LASTNAME"},
	{variable: "firstname", id: 1002, label: "First name", type: "FIRSTNAME"},
	{variable: "email", id: 1003, label: "Email", type: "EMAIL"},
	{variable: "gender", id: 1004, label: "Gender", type: "GENDER", choices: {M: "Male", F: "Female"}},
	{variable: "birthdate", id: 1005, label: "Birth date", type: "BIRTHDATE"},
	{variable: "phone", id: 1006, label: "Phone", type: "PHONE"},
	{variable: "mobile", id: 1007, label: "Mobile phone", type: "MOBILE"},
	{variable: "address", id: 1008, label: "Address", type: "ADDRESS"},
	{variable: "zipcode", id: 1009, label: "Postal code", type: "ZIPCODE"},
	{variable: "city", id: 1010, label: "City", type: "CITY"},
	{variable: "country", id: 1011, label: "Country", type: "COUNTRY"},
	{variable: "language", id: 1012, label: "Language", type: "LANGUAGE"},
	{variable: "upload", id: 1013, label: "File upload", type: "FILE UPLOAD", file: true}
];

def optin_vars: [
	{variable: "my_newsletter", id: 2001, label: "Subscribe to my newsletter",
	 description: "By checking this optin you agree to receive a monthly newsletter.",
	 categories: [{id: 118, label: "Newsletter & marketing", technicalName: "newsletter_marketing",
	               parent: {id: 218, label: "Marketing", technicalName: "marketing"}}]},
	{variable: "partners", id: 2002, label: "Offers from our partners", categories: []}
];

# Every v1 key a rule above names (fields, variables with their prefixes, the
# question's score and correctness keys); any other key is unmapped. A literal,
# so jq builds it once.
def named: {
	participation_id: true, ip: true, url: true, date_start: true, date_participation: true,
	status: true, device: true, user_agent: true, campaign_id: true, campaign_title: true,
	campaign_type: true, theme_code: true, theme_description: true, channel_uuid: true,
	publish_type: true, channel_date_start: true, channel_date_end: true, website_id: true,
	website_name: true, website_domain: true, website_country: true, lastname: true,
	firstname: true, email: true, gender: true, birthdate: true, phone: true, mobile: true,
	address: true, zipcode: true, city: true, country: true, language: true, upload: true,
	optin_my_newsletter: true, optin_partners: true, q1: true, q1_score: true, q1_correct: true
};

def str($k): .[$k] | if . == null then null else text end;
def dt($k): .[$k] | if . == null then null else brussels_utc end;

named as $named
| . as $v
| if $v.participation_id == null then error("participation_id: required key missing") else . end
| {
	id: ($v.participation_id | text | ascii_upcase),
	ip: str("ip"),
	url: str("url"),
	startedAt: dt("date_start"),
	completedAt: dt("date_participation"),
	state: ($v.status | if . == null then null
	        else {complete: "COMPLETED", incomplete: "INCOMPLETE"}[text | ascii_downcase]
	             // error("status: unknown value \(tojson)") end),
	browser: ({device: str("device"), userAgent: str("user_agent")} | compact),
	campaign: ({
		id: ($v.campaign_id | if . == null then null else integer end),
		name: str("campaign_title"),
		type: str("campaign_type"),
		themes: [{code: str("theme_code"), description: str("theme_description")} | compact
		         | select(. != null)],
		channel: ({
			uuid: (str("channel_uuid") | if . == null then null else ascii_upcase end),
			publishType: str("publish_type"),
			dateStart: dt("channel_date_start"),
			dateEnd: dt("channel_date_end"),
			website: ({
				id: ($v.website_id | if . == null then null else integer end),
				name: str("website_name"),
				domain: str("website_domain"),
				country: (str("website_country") | if . == null then null else ascii_upcase end)
			} | compact)
		} | compact)
	} | del(.[] | nulls)),
	form: (
		[form_vars[] as $f | $v[$f.variable] | select(. != null) | text
		 | {id: $f.id, label: $f.label, type: $f.type, variable: $f.variable,
		    responses: [if $f.file then file_response
		                elif $f.choices[.] then {label: $f.choices[.], value: .}
		                else {value: .} end]}]
		+ [($v | to_entries[]) as $e | select($named[$e.key] | not)
		   | {label: $e.key, variable: $e.key, responses: [{value: ($e.value | text)}]}]
	),
	optins: [optin_vars[] as $o | $v["optin_" + $o.variable] | select(. != null)
	         | {id: $o.id, label: $o.label, description: $o.description,
	            response: (if . == null then "" else text end),
	            variable: $o.variable, categories: $o.categories} | del(.[] | nulls)],
	questionnaire: [$v.q1 | select(. != null)
	                | {id: 3001, label: "Which city is the capital of Belgium?", type: "ALPHA NUMERIC",
	                   score: $v.q1_score, maxScore: 100, variable: "q1",
	                   responses: [{value: text, score: $v.q1_score,
	                                isCorrect: ($v.q1_correct | if . == null then null else truth end)}
	                               | del(.[] | nulls)]}
	                | del(.[] | nulls)]
}
| del(.[] | nulls)
