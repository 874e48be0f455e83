// Body of the web hook Kratos calls after a login, registration,
// verification or recovery completed with a code (kratos.yml:
// selfservice.flows.*.after ... hook: web_hook), POST /v1/kratos/confirmed.
//
// The courier counts a confirmation for each phone number that it sent a
// code to and that is not yet confirmed; other numbers are ignored. So this
// passes the identity's phone numbers (its verifiable addresses via sms)
// and, for the logs, which flow completed. Nothing else of the identity
// leaves Kratos.
//
// Every read is guarded: a Jsonnet error would make Kratos log a failed
// hook (the flow itself goes on: response.ignore is set).
function(ctx)
  local get(o, k) = if std.isObject(o) && std.objectHas(o, k) then o[k] else null;
  local identity = get(ctx, 'identity');
  local addresses = get(identity, 'verifiable_addresses');
  local phones = [
    a.value
    for a in (if std.isArray(addresses) then addresses else [])
    if std.isObject(a) && get(a, 'via') == 'sms' && std.isString(get(a, 'value'))
  ];

  // The flow, from the URL the end user's request went to
  // (/self-service/<flow>/...); "unknown" if it says nothing.
  local url = get(ctx, 'request_url');
  local path = if std.isString(url) then url else '';
  local flows = ['login', 'registration', 'verification', 'recovery', 'settings'];
  local found = [f for f in flows if std.length(std.findSubstr('/self-service/' + f, path)) > 0];

  {
    recipients: phones[0:std.min(10, std.length(phones))],
    flow: if std.length(found) > 0 then found[0] else 'unknown',
  }
