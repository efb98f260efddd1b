variable "region" {
  description = "AWS region to run in."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the instance and prefix of the other resources."
  type        = string
  default     = "rlchat"
}

variable "instance_type" {
  description = "EC2 instance type. Decoding runs on the CPU; 4 GiB of memory holds two replicas of a small model."
  type        = string
  default     = "t3.medium"
}

variable "architecture" {
  description = "CPU architecture of instance_type and of the Debian image: x86_64 (t3, m6i...) or arm64 (t4g, m7g...)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "ami_id" {
  description = "AMI to boot instead of the newest official Debian 12 image (it must be Debian 12 or alike: cloud-init, apt)."
  type        = string
  default     = null
}

variable "subnet_id" {
  description = "Subnet to launch in (with a route to the internet); null: a default subnet of the region's default VPC."
  type        = string
  default     = null
}

variable "root_volume_gb" {
  description = "Size of the root disk in GiB (PyTorch alone takes about 1 GiB installed; the models and PostgreSQL sit here too)."
  type        = number
  default     = 20
}

variable "key_name" {
  description = "EC2 key pair for SSH; null: none. Port 22 stays closed unless ssh_cidr_blocks names who may connect."
  type        = string
  default     = null
}

variable "ssh_cidr_blocks" {
  description = "IPv4 networks allowed to SSH in (e.g. [\"203.0.113.7/32\"]); empty (the default): only 80 and 443 are open."
  type        = list(string)
  default     = []
}

variable "rlchat_package" {
  description = "What `pip install` installs rlchat from: a version on an index, a wheel's https URL (e.g. an S3 presigned URL), or git+https://...; PostgreSQL needs the psycopg driver it depends on."
  type        = string

  validation {
    condition     = length(trimspace(var.rlchat_package)) > 0 && !can(regex("['\n]", var.rlchat_package))
    error_message = "rlchat_package must be a non-empty pip requirement without quotes or newlines."
  }
}

variable "torch_version" {
  description = "PyTorch version installed before rlchat (the version rlchat pins)."
  type        = string
  default     = "2.13.0"
}

variable "torch_index_url" {
  description = "Package index PyTorch comes from: CPU-only wheels by default (no CUDA download)."
  type        = string
  default     = "https://download.pytorch.org/whl/cpu"
}

variable "models_s3_uri" {
  description = "s3://bucket/prefix holding run directories (made by `rlchat train`), copied to /opt/rlchat/models at first boot through an instance role that may read only there; empty: copy them yourself (see the README), then start the replicas."
  type        = string
  default     = ""

  validation {
    condition     = var.models_s3_uri == "" || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^'\n]*)?$", var.models_s3_uri))
    error_message = "models_s3_uri must be empty or s3://bucket[/prefix]."
  }
}

variable "model_runs" {
  description = "Run directories under /opt/rlchat/models the replicas serve (RLCHAT_RUNS); the first is the default model."
  type        = list(string)
  default     = ["comedy-rl"]

  validation {
    condition     = length(var.model_runs) > 0 && alltrue([for run in var.model_runs : can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", run))])
    error_message = "model_runs must name at least one run directory, relative to /opt/rlchat/models, without spaces."
  }
}
