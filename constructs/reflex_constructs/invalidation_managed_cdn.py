"""A CloudFront distribution the stack creates for a cdn entry whose config has a `create:` block.

In front of the (existing) origin bucket through origin access control, HTTPS only, HTTP/2 and 3:

* `immutable_paths` (`assets/*`, `static/*`): cached a year (min = max = default): content-hashed names never
  change, so a changed file is a new object and nothing needs invalidating;
* `*.wasm`: the same, plus a viewer-response function that sets `Content-Type: application/wasm`
  (`WebAssembly.instantiateStreaming` requires it); gzip and Brotli on;
* everything else (HTML): `html_ttl_s` (default 60 s), gzip and Brotli: pages change in place, short-lived and
  invalidated when they change.

CloudFront compresses a response whose origin `Content-Type` is compressible; upload `.wasm` objects with
`Content-Type: application/wasm` so they are compressed too (the function fixes what viewers see either way).
With `cache_tags: true` the distribution reads cache tags from `cache_tag_header` (`CacheTagConfig`) and
`#tag` items invalidate by tag. Standard access logs go to a bucket of the stack.

The bucket is imported: its policy must allow this distribution to read it (see the `SiteOriginPolicy`
output, and docs/runbooks/invalidation.md); an imported bucket's policy cannot be changed by the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge
from reflex_core.config_base import ConfigError
from reflex_core.invalidation_config import CdnConfig

_PRICE_CLASSES = {"PriceClass_100": cloudfront.PriceClass.PRICE_CLASS_100,
                  "PriceClass_200": cloudfront.PriceClass.PRICE_CLASS_200,
                  "PriceClass_All": cloudfront.PriceClass.PRICE_CLASS_ALL}
_WASM_FUNCTION = """function handler(event) {
  var response = event.response;
  response.headers['content-type'] = { value: 'application/wasm' };
  return response;
}"""


@dataclass(frozen=True)
class ManagedDistributionProps:
    stage: str
    cdn: CdnConfig
    # A production-like stage (StageConfig.is_prod_like) must give a certificate: TLS 1.2 minimum, never the
    # *.cloudfront.net default (TLSv1).
    prod_like: bool = False


class ManagedDistribution(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ManagedDistributionProps) -> None:
        super().__init__(scope, construct_id)
        cdn = props.cdn
        create = cdn.create
        assert create is not None and cdn.origin is not None
        if props.prod_like and not create.certificate_arn:
            raise ConfigError(f"invalidation.cdn.{cdn.name}.create.certificate_arn: a production stage's distribution "
                              "needs its own certificate and domain_names (TLS 1.2 minimum); the default "
                              "*.cloudfront.net certificate allows TLS 1.0")
        bucket = s3.Bucket.from_bucket_name(self, "OriginBucket", cdn.origin.bucket)
        origin = origins.S3BucketOrigin.with_origin_access_control(bucket)
        html = self._policy("Html", f"reflex-{props.stage}-{cdn.name}-html", create.html_ttl_s, create.html_ttl_s,
                            0, "Pages: short-lived, invalidated when they change")
        immutable = self._policy("Immutable", f"reflex-{props.stage}-{cdn.name}-immutable", create.immutable_ttl_s,
                                 create.immutable_ttl_s, create.immutable_ttl_s,
                                 "Content-hashed assets: a new content gets a new name")
        behaviors: dict[str, cloudfront.BehaviorOptions] = {
            pattern: self._behavior(origin, immutable) for pattern in create.immutable_paths}
        if create.wasm:
            wasm_type = cloudfront.Function(
                self, "WasmContentType", function_name=f"reflex-{props.stage}-{cdn.name}-wasm"[:64],
                comment="Serve .wasm as application/wasm", runtime=cloudfront.FunctionRuntime.JS_2_0,
                code=cloudfront.FunctionCode.from_inline(_WASM_FUNCTION))
            behaviors["*.wasm"] = self._behavior(origin, immutable, function_associations=[
                cloudfront.FunctionAssociation(function=wasm_type,
                                               event_type=cloudfront.FunctionEventType.VIEWER_RESPONSE)])
        self.log_bucket: s3.Bucket | None = None
        if create.access_logs:
            self.log_bucket = s3.Bucket(
                self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                # CloudFront standard logging writes with an ACL: the bucket must accept object-writer ACLs.
                object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
                lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
                removal_policy=RemovalPolicy.RETAIN)
            acknowledge(self.log_bucket, "AwsSolutions-S1",
                        "This bucket receives the distribution's access logs; logging its own access would only "
                        "log the log writes.")
        certificate = (acm.Certificate.from_certificate_arn(self, "Certificate", create.certificate_arn)
                       if create.certificate_arn else None)
        self.distribution = cloudfront.Distribution(
            self, "Distribution", comment=(create.comment or f"Reflex {props.stage} {cdn.name}")[:128],
            default_behavior=self._behavior(origin, html), additional_behaviors=behaviors,
            default_root_object="index.html", price_class=_PRICE_CLASSES[create.price_class],
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            domain_names=list(create.domain_names) or None, certificate=certificate,
            minimum_protocol_version=(cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None),
            web_acl_id=create.web_acl_arn, enable_logging=create.access_logs, log_bucket=self.log_bucket,
            log_file_prefix=f"{cdn.name}/" if create.access_logs else None)
        # The bucket is not the stack's: the statement it needs is an output (see _origin_policy_output).
        Annotations.of(self.distribution).acknowledge_warning(
            "@aws-cdk/aws-cloudfront-origins:updateImportedBucketPolicyOac",
            "the origin bucket belongs to the application; its policy statement is a stack output")
        cfn = self.distribution.node.default_child
        assert isinstance(cfn, cloudfront.CfnDistribution)
        if cdn.cache_tags:
            cfn.add_property_override("DistributionConfig.CacheTagConfig", {"HeaderName": create.cache_tag_header})
        self._acknowledge(create.web_acl_arn is None, certificate is None)
        self._origin_policy_output(cdn, bucket)

    def _policy(self, construct_id: str, name: str, default_s: int, max_s: int, min_s: int,
                comment: str) -> cloudfront.CachePolicy:
        return cloudfront.CachePolicy(
            self, f"{construct_id}CachePolicy", cache_policy_name=name[:128], comment=comment,
            default_ttl=Duration.seconds(default_s), max_ttl=Duration.seconds(max_s), min_ttl=Duration.seconds(min_s),
            enable_accept_encoding_gzip=True, enable_accept_encoding_brotli=True,
            query_string_behavior=cloudfront.CacheQueryStringBehavior.none(),
            header_behavior=cloudfront.CacheHeaderBehavior.none(),
            cookie_behavior=cloudfront.CacheCookieBehavior.none())

    @staticmethod
    def _behavior(origin: cloudfront.IOrigin, policy: cloudfront.ICachePolicy, *,
                  function_associations: list[cloudfront.FunctionAssociation] | None = None
                  ) -> cloudfront.BehaviorOptions:
        return cloudfront.BehaviorOptions(
            origin=origin, cache_policy=policy, compress=True,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
            response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
            function_associations=function_associations)

    def _acknowledge(self, no_waf: bool, default_certificate: bool) -> None:
        acknowledge(self.distribution, "AwsSolutions-CFR1",
                    "A public storefront is served worldwide; restrict countries with a WAF web ACL (web_acl_arn) "
                    "if the business requires it.")
        if no_waf:
            acknowledge(self.distribution, "AwsSolutions-CFR2",
                        "No web ACL is configured for this distribution (create.web_acl_arn): the origin is a "
                        "private S3 bucket reachable only through origin access control.")
        if default_certificate:
            acknowledge(self.distribution, "AwsSolutions-CFR4",
                        "Without create.domain_names the distribution uses the *.cloudfront.net certificate, whose "
                        "minimum protocol CloudFront fixes (TLSv1); give a domain and an ACM certificate for "
                        "TLSv1.2_2021.")

    def _origin_policy_output(self, cdn: CdnConfig, bucket: s3.IBucket) -> None:
        stack = Stack.of(self)
        statement = {
            "Sid": f"AllowReflex{cdn.name.replace('-', '')}Distribution", "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"}, "Action": "s3:GetObject",
            "Resource": f"{bucket.bucket_arn}/*",
            "Condition": {"StringEquals": {"AWS:SourceArn": self.distribution.distribution_arn}}}
        CfnOutput(self, "OriginPolicyStatement", value=stack.to_json_string(statement),
                  description=f"Add this statement to the policy of s3://{cdn.origin.bucket if cdn.origin else ''}")
