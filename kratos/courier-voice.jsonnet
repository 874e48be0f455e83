// Body of the request Kratos's courier sends to kratos-phone-courier
// for codes spoken by a voice call (channel "sms" in kratos.yml pointed at
// POST /v1/voice instead of /v1/sms: the URL is the only difference).
//
// Kratos calls this with the whole message as `ctx`: recipient, body,
// template_type, template_data (which holds the whole identity, the request
// URL, ...), message_type and the end user's request_headers. Only what the
// courier needs to deliver the code and to limit it is passed on: the
// identity's id (the courier limits codes per identity, under a keyed
// hash: verification codes carry no client address, so without the id they
// are limited per number only), but no email address, no verifiable or
// recovery addresses, no request URL.
//
// Every read is guarded: a missing or null field must never stop the
// template, because a Jsonnet error makes Kratos fail the send.
//
// Kratos evaluates this file on its own (imports are disabled in its Jsonnet
// VM), so this file is a full copy of courier-sms.jsonnet; a test checks that
// both give the same output.
function(ctx)
  local get(o, k) = if std.isObject(o) && std.objectHas(o, k) then o[k] else null;
  local td = get(ctx, 'template_data');

  // Request headers worth keeping: the language (voice calls are read in it)
  // and the client address (per-client rate limits; the courier reads only
  // the one its limits.client_ip.header names). Each value is a list, one
  // entry per header line; names are as Kratos spells them.
  local headers = get(ctx, 'request_headers');
  local keptHeaders = {
    [h]: get(headers, h)
    for h in ['Accept-Language', 'X-Forwarded-For', 'True-Client-Ip', 'Cf-Connecting-Ip']
    if std.isArray(get(headers, h))
  };

  // For registration `identity` is the traits object itself; for login,
  // verification and recovery it is the whole identity with `.traits`.
  local identity = get(td, 'identity');
  local traits = if std.isObject(get(identity, 'traits')) then identity.traits else identity;
  local phoneChannel = get(traits, 'phone_channel');
  // The identity's id; registration's `identity` is the traits (no id, and
  // an `id` trait would be the end user's own writing).
  local identityId =
    if get(ctx, 'template_type') != 'registration_code_valid' && std.isString(get(identity, 'id'))
    then identity.id else null;

  // transient_payload.phone_courier.channel lets a client ask for a voice
  // call for this one message. Anything but "sms"/"voice" is dropped so a
  // bad client value cannot block delivery.
  local requested = get(get(get(td, 'transient_payload'), 'phone_courier'), 'channel');

  local codeFields = ['login_code', 'registration_code', 'verification_code'];

  {
    recipient: get(ctx, 'recipient'),
    body: get(ctx, 'body'),
    template_type: get(ctx, 'template_type'),
    [if get(ctx, 'message_type') != null then 'message_type']: get(ctx, 'message_type'),
    request_headers: keptHeaders,
    template_data: {
      [if std.isString(get(td, 'to')) then 'to']: td.to,
    } + {
      [f]: td[f]
      for f in codeFields
      if std.isString(get(td, f))
    } + {
      [if std.isNumber(get(td, 'expires_in_minutes')) then 'expires_in_minutes']: td.expires_in_minutes,
      [if requested == 'sms' || requested == 'voice' then 'transient_payload']: {
        phone_courier: { channel: requested },
      },
      [if std.isString(phoneChannel) || identityId != null then 'identity']: {
        [if identityId != null then 'id']: identityId,
        [if std.isString(phoneChannel) then 'traits']: { phone_channel: phoneChannel },
      },
    },
  }
